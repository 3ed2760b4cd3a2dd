//! A delaying, counting proxy in front of an S3 server, for bench/s3-vs-restic.sh.
//!
//!   s3_proxy TARGET DELAY_MS STATS_FILE
//!
//! Prints the port it listens on, then rewrites STATS_FILE every 50 ms with
//! `requests bytes_up bytes_down` since it started. Runs until killed.
//! With `S3_PROXY_LOG=FILE`, writes each request's first line to FILE after
//! the seconds since the proxy started.

use std::time::Duration;

use ledgervault_testkit::s3::DelayProxy;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: s3_proxy TARGET DELAY_MS STATS_FILE");
        std::process::exit(2);
    }
    let delay: u64 = args[2].parse().unwrap_or_else(|_| {
        eprintln!("s3_proxy: DELAY_MS must be a number");
        std::process::exit(2)
    });
    if let Some(log) = std::env::var_os("S3_PROXY_LOG") {
        if let Err(e) = ledgervault_testkit::s3::log_requests(log.as_ref()) {
            eprintln!("s3_proxy: cannot write the request log: {e}");
            std::process::exit(2);
        }
    }
    let proxy = DelayProxy::start(&args[1], Duration::from_millis(delay));
    println!("{}", proxy.port);
    let tmp = format!("{}.tmp", args[3]);
    loop {
        if std::fs::write(&tmp, proxy.traffic.line()).is_ok() {
            let _ = std::fs::rename(&tmp, &args[3]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
