//! The console's users: a name, a role and an Argon2id hash of the
//! password (PHC string), in a JSON file only its owner may read. The first
//! admin is made from the command line (`ledgervault console user add`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

/// What a user may do. Each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything, changes nothing.
    Viewer,
    /// Backs up, takes safety snapshots, restores to new places, runs drills.
    Operator,
    /// Everything, including restores over live data, users and settings.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => bail!("unknown role {s:?}: give admin, operator or viewer"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct User {
    name: String,
    role: Role,
    /// Argon2id, PHC string format.
    hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct UserFile {
    users: Vec<User>,
}

/// The shortest password the console takes.
pub const MIN_PASSWORD: usize = 10;

/// The user file.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    users: Vec<User>,
}

impl Users {
    /// Reads the user file at `path`; a file that is not there has no users.
    pub fn load(path: &Path) -> Result<Users> {
        let users = match std::fs::read(path) {
            Ok(b) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o022 != 0 {
                    bail!(
                        "{} may be changed by other users (mode {:o}): anyone who can write it can make an admin; run chmod 600 on it",
                        path.display(),
                        mode & 0o777
                    );
                }
                serde_json::from_slice::<UserFile>(&b)
                    .with_context(|| format!("{}: not a console user file", path.display()))?
                    .users
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
        };
        Ok(Users {
            path: path.to_path_buf(),
            users,
        })
    }

    /// Writes the file (readable by its owner only), replacing it whole.
    pub fn save(&self) -> Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".users-{}.tmp", rand::random::<u64>()));
        let text = serde_json::to_vec_pretty(&UserFile {
            users: self.users.clone(),
        })?;
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow!("cannot write {}: {e}", self.path.display())
        })
    }

    /// Names and roles, in the file's order.
    pub fn list(&self) -> Vec<(String, Role)> {
        self.users
            .iter()
            .map(|u| (u.name.clone(), u.role))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds a user, or gives an existing one a new role and password.
    pub fn set(&mut self, name: &str, role: Role, password: &[u8]) -> Result<()> {
        check_name(name)?;
        if password.len() < MIN_PASSWORD {
            bail!("the password is too short: use at least {MIN_PASSWORD} characters");
        }
        let hash = hash(password)?;
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(u) => {
                u.role = role;
                u.hash = hash;
            }
            None => self.users.push(User {
                name: name.to_string(),
                role,
                hash,
            }),
        }
        Ok(())
    }

    /// Removes a user; the last admin stays.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        let i = self
            .users
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| anyhow!("no console user {name:?}"))?;
        let admins = self.users.iter().filter(|u| u.role == Role::Admin).count();
        if self.users[i].role == Role::Admin && admins == 1 {
            bail!("{name} is the last admin: add another admin first");
        }
        self.users.remove(i);
        Ok(())
    }

    /// The role of `name` if `password` is theirs. An unknown name costs
    /// the same work as a wrong password, so timing tells nothing.
    pub fn verify(&self, name: &str, password: &[u8]) -> Option<Role> {
        let user = self.users.iter().find(|u| u.name == name);
        let stored = match user {
            Some(u) => u.hash.clone(),
            None => dummy_hash().to_string(),
        };
        let parsed = PasswordHash::new(&stored).ok()?;
        let ok = Argon2::default().verify_password(password, &parsed).is_ok();
        user.filter(|_| ok).map(|u| u.role)
    }

    /// A short fingerprint of `name`'s password hash: a session records
    /// it, and a new password (or a user removed and added again) ends the
    /// sessions of the old one.
    pub fn stamp(&self, name: &str) -> Option<String> {
        let u = self.users.iter().find(|u| u.name == name)?;
        use sha2::Digest;
        let h = sha2::Sha256::digest(u.hash.as_bytes());
        Some(hex::encode(&h[..8]))
    }

    /// The current role of `name` (a session ends when its user is gone).
    pub fn role(&self, name: &str) -> Option<Role> {
        self.users.iter().find(|u| u.name == name).map(|u| u.role)
    }
}

/// Whether `name` could be a user name (checked before a sign-in is
/// counted or logged).
pub fn valid_name(name: &str) -> bool {
    check_name(name).is_ok()
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if !ok {
        bail!("{name:?} is not a user name: use 1 to 64 letters, digits, '.', '_', '@' or '-'");
    }
    Ok(())
}

fn hash(password: &[u8]) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password, &salt)
        .map_err(|e| anyhow!("cannot hash the password: {e}"))?
        .to_string())
}

/// A hash of a random password, made once: what an unknown name is
/// checked against.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash(&rand::random::<[u8; 16]>()).expect("hashing works"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_hashed_checked_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.json");
        let mut u = Users::load(&path).unwrap();
        assert!(u.is_empty());
        u.set("ann", Role::Admin, b"correct horse").unwrap();
        u.set("bob", Role::Viewer, b"battery staple").unwrap();
        assert!(u.set("eve", Role::Viewer, b"short").is_err());
        assert!(u.set("../x", Role::Viewer, b"long enough pw").is_err());
        u.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse") && text.contains("$argon2id$"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let u = Users::load(&path).unwrap();
        assert_eq!(u.verify("ann", b"correct horse"), Some(Role::Admin));
        assert_eq!(u.verify("ann", b"correct horsE"), None);
        assert_eq!(u.verify("nobody", b"correct horse"), None);
        assert!(!format!("{u:?}").contains("argon2"));
        let mut u = u;
        assert!(u.remove("ann").is_err(), "the last admin stays");
        u.remove("bob").unwrap();
        assert_eq!(u.list(), vec![("ann".to_string(), Role::Admin)]);
    }
}
