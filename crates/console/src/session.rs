//! Sessions and login throttling, kept in memory: a restart signs
//! everyone out, which is the safe way round.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::users::Role;

/// A session ends after this long without a request...
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// ...and after this long in any case.
pub const LONGEST: Duration = Duration::from_secs(12 * 3600);

/// A signed-in user.
#[derive(Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// Which password the user signed in with ([`crate::users::Users::stamp`]):
    /// a new password ends the sessions of the old one.
    pub stamp: String,
    /// Sent with every form; a change without it is refused.
    pub csrf: String,
    started: Instant,
    seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// 256 random bits, hex.
pub fn token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Compares secrets in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user` under a fresh token (never one the browser
    /// brought: that is how session fixation is prevented). Returns the
    /// token.
    pub fn start(&self, user: &str, role: Role, stamp: &str) -> String {
        let now = Instant::now();
        let token = token();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| alive(s, now));
        map.insert(
            token.clone(),
            Session {
                user: user.to_string(),
                role,
                stamp: stamp.to_string(),
                csrf: token_csrf(),
                started: now,
                seen: now,
            },
        );
        token
    }

    /// The session of `token`, if it is still alive (which it stays for
    /// another [`IDLE`]).
    pub fn get(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get_mut(token)?;
        if !alive(s, now) {
            map.remove(token);
            return None;
        }
        s.seen = now;
        Some(s.clone())
    }

    pub fn end(&self, token: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(token);
    }

    /// Ends every session of `user` (removed, or given another role).
    pub fn end_user(&self, user: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.user != user);
    }
}

fn token_csrf() -> String {
    token()
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.started) < LONGEST
}

/// Failed sign-ins, by key (a user name, a name and an address, an
/// address). After `free` failures in a row a key is refused for a time
/// that doubles with each further failure, up to [`LONGEST_WAIT`]; a key
/// with no failure for [`FORGET_AFTER`] starts again from nothing.
#[derive(Default)]
pub struct Throttle {
    map: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    until: Option<Instant>,
    last: Instant,
}

/// Failures allowed in a row: per user name and address, per user name
/// from anywhere, per address whatever the name.
pub const FREE_TRIES: u32 = 5;
pub const FREE_PER_NAME: u32 = 20;
pub const FREE_PER_ADDRESS: u32 = 50;
pub const FIRST_WAIT: Duration = Duration::from_secs(15);
pub const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Keys kept at most; past it, keys not waiting are forgotten.
const MOST_KEYS: usize = 100_000;

impl Throttle {
    /// How long `key` must still wait, if it must.
    pub fn wait(&self, key: &str) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.get(key)?;
        let left = f.until?.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// One more failure for `key`, after `free` free tries. Returns
    /// whether the key must now wait (and did not before).
    pub fn fail(&self, key: &str, free: u32) -> bool {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MOST_KEYS {
            map.retain(|_, f| f.until.is_some_and(|u| u > now));
        }
        let f = map.entry(key.to_string()).or_insert(Failures {
            count: 0,
            until: None,
            last: now,
        });
        if now.duration_since(f.last) > FORGET_AFTER {
            f.count = 0;
            f.until = None;
        }
        f.last = now;
        f.count = f.count.saturating_add(1);
        if f.count < free {
            return false;
        }
        let was_waiting = f.until.is_some_and(|u| u > now);
        let doublings = (f.count - free).min(10);
        let wait = (FIRST_WAIT * 2u32.pow(doublings)).min(LONGEST_WAIT);
        f.until = Some(now + wait);
        !was_waiting
    }

    pub fn clear(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_fresh_and_end() {
        let s = Sessions::default();
        let a = s.start("ann", Role::Admin, "x");
        let b = s.start("ann", Role::Admin, "x");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let sa = s.get(&a).unwrap();
        assert_ne!(sa.csrf, s.get(&b).unwrap().csrf);
        s.end(&a);
        assert!(s.get(&a).is_none() && s.get(&b).is_some());
        s.end_user("ann");
        assert!(s.get(&b).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn failures_past_the_free_tries_make_a_key_wait() {
        let t = Throttle::default();
        for _ in 0..FREE_TRIES - 1 {
            assert!(!t.fail("user:ann", FREE_TRIES));
            assert!(t.wait("user:ann").is_none());
        }
        assert!(t.fail("user:ann", FREE_TRIES), "starts waiting");
        let w = t.wait("user:ann").unwrap();
        assert!(w <= FIRST_WAIT && w > FIRST_WAIT / 2, "{w:?}");
        assert!(!t.fail("user:ann", FREE_TRIES), "was waiting already");
        assert!(t.wait("user:ann").unwrap() > FIRST_WAIT);
        assert!(t.wait("user:bob").is_none());
        t.clear("user:ann");
        assert!(t.wait("user:ann").is_none());
    }
}
