fn main() {
    println!("linkpool {}", env!("CARGO_PKG_VERSION"));
}
