//! The web console: ledgervault for the people who are not IT. Served by
//! the daemon (or `ledgervault console serve`), on loopback unless given
//! TLS; every page and action needs a signed-in user, whose role says what
//! they may do; every change carries the session's CSRF token and lands in
//! the audit log. Pages are rendered on the server and work without
//! JavaScript. It is a front end like the command line: the work is done by
//! `ledgervault-service`, and this crate decides only what people see.

pub mod audit;
mod browse;
mod clients;
mod conn;
pub mod html;
mod pages;
mod server;
pub mod session;
mod settings;
pub mod tasks;
pub mod tls;
pub mod users;

pub use server::{check_listen, start, Console, ConsoleOptions};
pub use tls::Tls;
