fn main() {
    println!("linkpool-proxy {}", env!("CARGO_PKG_VERSION"));
}
