//! A proxy host with two addresses on one interface, listening on the wildcard: a member
//! whose bundle names the second address must get its answers from that address (a
//! gateway accepts datagrams only from the proxy address it talks to). Before the proxy
//! answered from the address it was reached at (IP_PKTINFO), the kernel's routing picked
//! the first address and the member never connected.

mod common;

use std::time::{Duration, Instant};

use linkpool_testbed::pool::Pool;

#[test]
fn a_multi_homed_proxy_answers_from_the_address_a_member_reached() {
    let coop = common::coop1();
    let proxy = coop.proxy();
    let second = "203.0.113.11";
    proxy
        .exec_ok(&["ip", "addr", "add", &format!("{second}/24"), "dev", "eth0"])
        .unwrap();
    let mut pool = Pool::configure(&coop).unwrap_or_else(|e| panic!("{e}"));
    // The co-op publishes the second address: bundles made from now on name it.
    let conf = pool.proxy_config();
    let first = format!("{}:7117", proxy.addr_v4());
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains(&first), "{text}");
    std::fs::write(&conf, text.replace(&first, &format!("{second}:7117"))).unwrap();
    let member = Pool::member_name(1);
    pool.remove_member(&member).unwrap();
    std::fs::remove_file(
        pool.proxy_config()
            .with_file_name(format!("{member}.bundle")),
    )
    .unwrap();
    let bundle = pool.add_member(&member).unwrap();
    pool.give_bundle(1, &bundle).unwrap();
    pool.start_proxy(&coop).unwrap();
    pool.start_gateway(&coop, 1)
        .unwrap_or_else(|e| panic!("{e}\n{}", pool.logs()));
    let start = Instant::now();
    while !pool
        .gateway_status(&coop, 1, true)
        .is_ok_and(|s| s.contains("\"connected\":true"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no session through the proxy's second address\n{}",
            pool.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Traffic flows, and the proxy's path shows it answers from the second address.
    let client = coop.client(1);
    let target = coop.internet().addr_v4().to_string();
    client
        .exec_ok(&["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", &target])
        .unwrap_or_else(|e| panic!("{e}\n{}", pool.logs()));
    let status = pool.proxy_status(&coop, true).unwrap();
    assert!(
        status.contains(&format!("\"local\":\"{second}:7117\"")),
        "{status}"
    );
}
