//! Opening, creating and reading a repository.
//!
//! [`Repository`] is an opened repository: its config is read and a key file
//! has unlocked the master key. Operations (`backup`, `restore`, `check`)
//! take a `&Repository` and load the index they need.

use std::sync::Arc;

use crate::backend::{AppendOnlyBackend, Backend, BackendErrorKind, ObjectInfo};
use crate::chunkmap::{self, ChunkMap};
use crate::config::{RepoConfig, CONFIG_PATH};
use crate::crypto::{KdfParams, Keys, MasterKey};
use crate::envelope::{open_file, seal_file, FileKind};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::immutable::ImmutableBackend;
use crate::index::{decode_index, encode_index, Index, PackRecord};
use crate::keyfile::{KeyFile, KEYS_DIR};
use crate::pack::{open_frame, BlobKind};
use crate::snapshot::{Node, Snapshot, Tree};

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Target pack size in bytes (default 16 MiB).
    pub pack_size: u32,
    /// Argon2id parameters for the first key.
    pub kdf: KdfParams,
    /// Lock every object for this many days (needs S3 Object Lock).
    pub immutable_days: Option<u32>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            pack_size: 16 * 1024 * 1024,
            kdf: KdfParams::default(),
            immutable_days: None,
        }
    }
}

/// Readable snapshots sorted by time, and errors for unreadable ones.
pub type SnapshotList = (Vec<(Id, Snapshot)>, Vec<Error>);

/// A key file as listed by `key list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: Id,
    /// True for the key that opened this session.
    pub current: bool,
    pub created: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub user: String,
    /// Sessions opened with this key can add but never delete.
    pub append_only: bool,
    /// Its bytes no longer match its name, or it no longer decodes.
    pub damaged: bool,
}

/// An opened repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepoConfig,
    keys: Arc<Keys>,
    master: MasterKey,
    key_id: Id,
    append_only: bool,
    /// The config exactly as stored (key files hold its checksum).
    config_bytes: Vec<u8>,
    /// How long taking a lock keeps retrying while another process holds
    /// a conflicting one (zero: fail at once).
    lock_wait: std::time::Duration,
    /// Frames `read_blob` decoded lately: trees are small and many share a
    /// frame, so walking a snapshot would otherwise decompress each frame
    /// once per tree.
    frames: Arc<crate::frames::FrameCache>,
}

/// Decoded bytes `read_blob` keeps at most.
const READ_FRAME_CACHE: usize = 8 << 20;

/// The backend path of a pack.
pub fn pack_path(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}

/// Folder of damage records: `damaged/<pack id>`, one per pack that `check`
/// or a restore found damaged.
pub const DAMAGED_DIR: &str = "damaged/";

fn object_path(kind: FileKind, id: &Id) -> String {
    format!("{}{}", kind.dir(), id)
}

/// The id an object's path names (its last component), if it is one.
pub fn id_from_path(path: &str) -> Option<Id> {
    Id::from_hex(path.rsplit('/').next()?)
}

/// Key files unlocked ahead of [`Repository::unlock_with`], from copies
/// kept on this machine (a remote repository's metadata cache): the key
/// derivation, slow on purpose, then runs while the storage is still being
/// asked what it holds. A copy counts only if the storage still lists a
/// key file with the same bytes, so a stale copy changes nothing.
#[derive(Default)]
pub struct UnlockedAhead(Vec<(Id, Option<MasterKey>)>);

impl UnlockedAhead {
    /// Tries `password` on `copies` (path and bytes of key files), in path
    /// order, up to the first it opens, as [`Repository::unlock`] would.
    pub fn try_copies(mut copies: Vec<(String, Vec<u8>)>, password: &[u8]) -> UnlockedAhead {
        copies.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tried = Vec::new();
        for (path, bytes) in copies {
            let id = Id::of_object(&bytes);
            if id_from_path(&path) != Some(id) {
                continue;
            }
            let Ok(kf) = KeyFile::decode(&bytes, &path) else {
                continue;
            };
            match kf.unlock(password, &path) {
                Ok(Some(master)) => {
                    tried.push((id, Some(master)));
                    break;
                }
                Ok(None) => tried.push((id, None)),
                Err(_) => {}
            }
        }
        UnlockedAhead(tried)
    }

    fn take(&mut self, id: &Id) -> Option<Option<MasterKey>> {
        let i = self.0.iter().position(|(k, _)| k == id)?;
        Some(self.0.swap_remove(i).1)
    }
}

/// A repository found on storage, not yet unlocked: its config and the
/// listing of its key files (see [`Repository::find`]).
pub struct Found {
    config_bytes: Vec<u8>,
    keys: Vec<ObjectInfo>,
}

/// A scoped thread's result; its panic goes on in the caller.
pub(crate) fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

impl Repository {
    /// Creates a new repository at an empty location.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
    ) -> Result<Repository> {
        let config = RepoConfig::new(opts.pack_size)?;
        Self::create(backend, password, opts, config, MasterKey::generate())
    }

    /// Creates a new repository that shares `other`'s master key and
    /// chunking, under its own id and password: blobs get the same ids in
    /// both, so `copy` between them skips what is there without reading it,
    /// and deduplicates against everything the other holds.
    pub fn init_sharing_keys(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
        other: &Repository,
    ) -> Result<Repository> {
        let mut config = RepoConfig::new(opts.pack_size)?;
        config.chunker = other.config.chunker;
        config.dump_chunker = other.config.dump_chunker;
        Self::create(backend, password, opts, config, other.master.clone())
    }

    fn create(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
        mut config: RepoConfig,
        master: MasterKey,
    ) -> Result<Repository> {
        let backend = match opts.immutable_days {
            None => backend,
            Some(days) => {
                match backend.object_lock()? {
                    Some(true) => {}
                    Some(false) => return Err(Error::Invalid(format!(
                        "{}: the bucket has no Object Lock, so nothing can be made immutable; create a bucket with Object Lock enabled (it cannot be turned on later), or see the README for a bucket policy that denies deletes",
                        backend.location()
                    ))),
                    None => return Err(Error::Invalid(format!(
                        "{}: this storage has no Object Lock, so nothing can be made immutable; see the README for the alternatives (a bucket policy that denies deletes to the backup key, an append-only key)",
                        backend.location()
                    ))),
                }
                config.set_immutable(days)?;
                Arc::new(ImmutableBackend::new(backend, days)) as Arc<dyn Backend>
            }
        };
        match backend.read(CONFIG_PATH) {
            Ok(_) => return Err(Error::AlreadyExists(backend.location())),
            Err(e) if e.kind == BackendErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if !backend.list("")?.is_empty() {
            return Err(Error::Invalid(format!(
                "{} is not empty and holds no repository; choose an empty or new folder",
                backend.location()
            )));
        }
        let config_bytes = config.encode();
        let kf = KeyFile::create(&master, password, opts.kdf, false, &config_bytes)?;
        let bytes = kf.encode();
        let (key_id, path) = KeyFile::path_for(&bytes);
        // Key first: a config without a key would be a repository nobody can open.
        backend.write(&path, &bytes)?;
        backend.write(CONFIG_PATH, &config_bytes)?;
        Ok(Repository {
            backend,
            config,
            keys: Arc::new(Keys::derive(&master)),
            master,
            key_id,
            append_only: false,
            config_bytes,
            lock_wait: std::time::Duration::ZERO,
            frames: Arc::new(crate::frames::FrameCache::new(READ_FRAME_CACHE)),
        })
    }

    /// Reads the config without a password.
    pub fn read_config(backend: &dyn Backend) -> Result<RepoConfig> {
        Self::read_config_bytes(backend).and_then(|b| RepoConfig::decode(&b))
    }

    /// Finds the repository at `backend` without a password: reads its
    /// config and lists its key files at once (on remote storage each is a
    /// round trip). A caller that checks for a repository before asking
    /// for the password hands the result to [`unlock`](Self::unlock).
    pub fn find(backend: &dyn Backend) -> Result<Found> {
        let (config, keys) = std::thread::scope(|s| {
            let keys = s.spawn(|| backend.list(KEYS_DIR));
            (backend.read(CONFIG_PATH), joined(keys))
        });
        match config {
            Ok(config_bytes) => {
                RepoConfig::decode(&config_bytes)?;
                Ok(Found {
                    config_bytes,
                    keys: keys?,
                })
            }
            Err(e) if e.kind == BackendErrorKind::NotFound => {
                Err(Self::no_config(backend, keys.map_err(Error::from)))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn read_config_bytes(backend: &dyn Backend) -> Result<Vec<u8>> {
        match backend.read(CONFIG_PATH) {
            Ok(b) => Ok(b),
            Err(e) if e.kind == BackendErrorKind::NotFound => Err(Self::no_config(
                backend,
                backend.list(KEYS_DIR).map_err(Error::from),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The error for a missing config: key files without a config mean the
    /// config was lost, not never made. Say so instead of "no repository
    /// here".
    fn no_config(backend: &dyn Backend, keys: Result<Vec<ObjectInfo>>) -> Error {
        match keys {
            Ok(keys) if !keys.is_empty() => Error::corrupt(
                CONFIG_PATH,
                "missing, but key files are present: the repository's config was deleted",
            ),
            _ => Error::RepositoryNotFound(backend.location()),
        }
    }

    /// Opens a repository with `password`.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        let found = Self::find(backend.as_ref())?;
        Self::unlock(backend, found, password)
    }

    /// Opens the repository [`find`](Self::find) found with `password`.
    /// The key file's checksum of the config still vouches for the config.
    pub fn unlock(backend: Arc<dyn Backend>, found: Found, password: &[u8]) -> Result<Repository> {
        Self::unlock_with(backend, found, password, UnlockedAhead::default())
    }

    /// [`unlock`](Self::unlock), using what `ahead` already derived for key
    /// files whose bytes the storage still holds.
    pub fn unlock_with(
        backend: Arc<dyn Backend>,
        found: Found,
        password: &[u8],
        mut ahead: UnlockedAhead,
    ) -> Result<Repository> {
        let Found { config_bytes, keys } = found;
        let config = RepoConfig::decode(&config_bytes)?;
        let backend = match config.immutable_days {
            Some(days) => Arc::new(ImmutableBackend::new(backend, days)) as Arc<dyn Backend>,
            None => backend,
        };
        if keys.is_empty() {
            return Err(Error::corrupt("keys/", "the repository has no key files"));
        }
        let mut last_err = None;
        let mut readable = 0;
        // Key files whose bytes no longer match their names: the password
        // may be right and its key file damaged.
        let mut damaged: Vec<String> = Vec::new();
        for k in keys {
            let bytes = match backend.read(&k.path) {
                Ok(b) => b,
                Err(e) => {
                    last_err = Some(e.into());
                    continue;
                }
            };
            if id_from_path(&k.path) != Some(Id::of_object(&bytes)) {
                damaged.push(k.path.clone());
            }
            let kf = match KeyFile::decode(&bytes, &k.path) {
                Ok(kf) => kf,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let unlocked = match ahead.take(&Id::of_object(&bytes)) {
                // Derived and tried on these very bytes.
                Some(done) => Ok(done),
                _ => kf.unlock(password, &k.path),
            };
            match unlocked {
                Ok(Some(master)) => {
                    if !kf.config_matches(&master, &config_bytes) {
                        return Err(Error::corrupt(
                            CONFIG_PATH,
                            format!(
                                "altered: its checksum in {} does not match (a damaged or edited config)",
                                k.path
                            ),
                        ));
                    }
                    let mut repo = Repository {
                        backend,
                        config,
                        keys: Arc::new(Keys::derive(&master)),
                        master,
                        key_id: Id::of_object(&bytes),
                        append_only: false,
                        config_bytes,
                        lock_wait: std::time::Duration::ZERO,
                        frames: Arc::new(crate::frames::FrameCache::new(READ_FRAME_CACHE)),
                    };
                    if kf.append_only {
                        repo.set_append_only();
                    }
                    return Ok(repo);
                }
                Ok(None) => readable += 1,
                Err(e @ Error::NewerFormat { .. }) => return Err(e),
                Err(e) => last_err = Some(e),
            }
        }
        // With at least one intact key file the password is what is wrong;
        // with none, say why no key file could be used.
        match last_err {
            Some(e @ Error::Backend(_)) => Err(e),
            _ if !damaged.is_empty() => Err(Error::corrupt(
                damaged.join(", "),
                "content does not match its name, so no key opened with this password; \
                 the password is wrong or its key file is damaged (another person's key \
                 may still open the repository)",
            )),
            Some(e) if readable == 0 => Err(e),
            _ => Err(Error::WrongPassword),
        }
    }

    /// Days every object stays locked, for an immutable repository.
    pub fn immutable_days(&self) -> Option<u32> {
        self.config.immutable_days
    }

    /// In an immutable repository, extends the locks of everything a new
    /// snapshot relies on (its packs, the config, and the key file this
    /// session opened with) to cover the next N days. Index files are not
    /// extended: each is locked for N days when written, and `repair
    /// index` rebuilds them from the packs. Other key files are not either,
    /// so a key removed with `key remove` goes once its lock ends. Returns
    /// how many locks were extended; dates the storage already reported
    /// cost no request, and the rest are asked for eight at a time.
    pub fn retain_for_snapshot(&self, packs: &std::collections::HashSet<Id>) -> Result<usize> {
        let Some(days) = self.config.immutable_days else {
            return Ok(0);
        };
        let (at_least, to) = crate::immutable::lock_window(days, std::time::SystemTime::now());
        let mut paths: Vec<String> = packs.iter().map(pack_path).collect();
        paths.push(CONFIG_PATH.to_string());
        paths.push(format!("{KEYS_DIR}{}", self.key_id));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let extended = std::sync::atomic::AtomicUsize::new(0);
        let failed: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..8.min(paths.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = paths.get(i) else { break };
                    match self.backend.retain(p, at_least, to) {
                        Ok(true) => {
                            extended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                            f.get_or_insert(e.into());
                            next.store(paths.len(), std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(extended.into_inner())
    }

    /// Makes this session append-only: from now on nothing in the
    /// repository can be deleted or overwritten through it (lock files
    /// excepted). There is no way back for the session.
    pub fn set_append_only(&mut self) {
        if !self.append_only {
            self.append_only = true;
            self.backend = Arc::new(AppendOnlyBackend::new(self.backend.clone()));
        }
    }

    /// Lets every lock this session takes wait up to `wait` for a
    /// conflicting lock of another live process to go away, retrying with
    /// growing, jittered delays, before failing with [`Error::Locked`].
    pub fn set_lock_wait(&mut self, wait: std::time::Duration) {
        self.lock_wait = wait;
    }

    /// How long taking a lock may wait (see [`Repository::set_lock_wait`]).
    pub fn lock_wait(&self) -> std::time::Duration {
        self.lock_wait
    }

    /// Whether this session is append-only.
    pub fn is_append_only(&self) -> bool {
        self.append_only
    }

    /// Fails with [`Error::AppendOnly`] naming `operation` when this session
    /// may not delete.
    pub fn ensure_may_delete(&self, operation: &str) -> Result<()> {
        if self.append_only {
            Err(Error::AppendOnly(operation.to_string()))
        } else {
            Ok(())
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// The id of the key file that opened this session.
    pub fn key_id(&self) -> Id {
        self.key_id
    }

    /// Reads an object and checks that its name is the hash of its bytes.
    fn read_named(&self, path: &str) -> Result<Vec<u8>> {
        let bytes = self.backend.read(path)?;
        if let Some(id) = id_from_path(path) {
            if Id::of_object(&bytes) != id {
                return Err(Error::corrupt(
                    path,
                    "content does not match its name (altered or truncated)",
                ));
            }
        }
        Ok(bytes)
    }

    /// Whether the sealed file `kind`/`id` is foreign: its bytes match its
    /// name (so it is not our file, damaged) but do not open under this
    /// repository's keys. Anyone with write access to the storage can add
    /// such files, and on locked storage nobody can remove them; they are
    /// skipped by every reader and reported by `check`.
    pub fn is_foreign(&self, kind: FileKind, id: &Id) -> bool {
        let path = object_path(kind, id);
        match self.read_named(&path) {
            Ok(bytes) => open_file(&self.keys, kind, &bytes, &path).is_err(),
            Err(_) => false,
        }
    }

    /// Reads one index file; `None` when it is foreign (see
    /// [`is_foreign`](Self::is_foreign)).
    pub fn read_own_index_file(&self, id: &Id) -> Result<Option<Vec<PackRecord>>> {
        let path = object_path(FileKind::Index, id);
        let bytes = self.read_named(&path)?;
        let Ok(payload) = open_file(&self.keys, FileKind::Index, &bytes, &path) else {
            return Ok(None);
        };
        decode_index(&payload, &path).map(Some)
    }

    /// Reads and decodes one index file.
    pub fn read_index_file(&self, id: &Id) -> Result<Vec<PackRecord>> {
        let path = object_path(FileKind::Index, id);
        let bytes = self.read_named(&path)?;
        let payload = open_file(&self.keys, FileKind::Index, &bytes, &path)?;
        decode_index(&payload, &path)
    }

    /// Ids of all index files.
    pub fn list_ids(&self, kind: FileKind) -> Result<Vec<Id>> {
        Ok(self
            .backend
            .list(kind.dir())?
            .iter()
            .filter_map(|o| id_from_path(&o.path))
            .collect())
    }

    /// Loads every index file into memory, checked against the packs on
    /// storage and the packs recorded as damaged (see [`Index::checked`]):
    /// a blob stored twice is read from a sound pack. A damaged index file
    /// is an error that names it (`check` reports all of them instead).
    pub fn load_index(&self) -> Result<Index> {
        // The three listings run at once (on remote storage each is a round
        // trip). Their order does not matter: a pack the pack listing missed
        // (written by a backup running now) makes the blobs of any index
        // file that lists it weak, never wrongly sound, and packs are only
        // deleted under an exclusive lock, which the caller's lock excludes.
        let (present, damaged, ids) = std::thread::scope(|s| {
            let damaged = s.spawn(|| self.damaged_packs());
            let ids = s.spawn(|| self.list_ids(FileKind::Index));
            let present = self.list_packs();
            (present, joined(damaged), joined(ids))
        });
        let (present, damaged, ids) = (present?, damaged?, ids?);
        // Index files are read one after the other into the index, so
        // only one file's records are held beside it.
        let mut failed = None;
        let records = ids.iter().flat_map(|id| {
            if failed.is_some() {
                // The load fails anyway: read nothing more.
                return Vec::new();
            }
            match self.read_own_index_file(id) {
                Ok(records) => records.unwrap_or_default(),
                Err(e) => {
                    failed = Some(e);
                    Vec::new()
                }
            }
        });
        let index = Index::checked(records, present, &damaged);
        match failed {
            Some(e) => Err(e),
            None => Ok(index),
        }
    }

    /// The packs on storage and their sizes.
    pub fn list_packs(&self) -> Result<std::collections::HashMap<Id, u64>> {
        Ok(self
            .backend
            .list("data/")?
            .into_iter()
            .filter_map(|o| id_from_path(&o.path).map(|id| (id, o.size)))
            .collect())
    }

    /// Packs that `check` or a restore recorded as damaged (`damaged/<id>`).
    pub fn damaged_packs(&self) -> Result<std::collections::HashSet<Id>> {
        Ok(self
            .backend
            .list(DAMAGED_DIR)?
            .into_iter()
            .filter_map(|o| id_from_path(&o.path))
            .collect())
    }

    /// Records that `pack` holds damaged data, so that the next backup
    /// stores again what it held instead of deduplicating against it.
    /// `by` is the operation that found it. Already recorded is fine.
    pub fn record_damaged(&self, pack: &Id, by: &str) -> Result<()> {
        let path = format!("{DAMAGED_DIR}{pack}");
        match self.backend.read_range(&path, 0, 0) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == BackendErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let body = serde_json::json!({ "found": chrono::Utc::now(), "by": by });
        self.backend
            .write(&path, &serde_json::to_vec(&body).expect("json"))?;
        Ok(())
    }

    /// Removes damage records of packs no longer on storage (after prune or
    /// repair deleted them); returns how many.
    pub fn forget_damaged_gone(&self) -> Result<usize> {
        let present = self.list_packs()?;
        let mut n = 0;
        for id in self.damaged_packs()? {
            if !present.contains_key(&id) {
                self.backend.delete(&format!("{DAMAGED_DIR}{id}"))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Writes an index file for `packs`; returns its id and size.
    pub fn write_index(&self, packs: &[PackRecord]) -> Result<(Id, u64)> {
        self.write_sealed(FileKind::Index, &encode_index(packs))
    }

    /// Seals and writes a file; returns its id and stored size.
    pub(crate) fn write_sealed(&self, kind: FileKind, payload: &[u8]) -> Result<(Id, u64)> {
        let bytes = seal_file(&self.keys, kind, payload);
        let id = Id::of_object(&bytes);
        self.backend.write(&object_path(kind, &id), &bytes)?;
        Ok((id, bytes.len() as u64))
    }

    /// Reads and opens a sealed file.
    pub(crate) fn read_sealed(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let path = object_path(kind, id);
        let bytes = self.read_named(&path)?;
        open_file(&self.keys, kind, &bytes, &path)
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let payload = self.read_sealed(FileKind::Snapshot, id)?;
        Snapshot::decode(&payload, &object_path(FileKind::Snapshot, id))
    }

    /// Stores a snapshot; returns its id.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        Ok(self.write_sealed(FileKind::Snapshot, &snap.encode())?.0)
    }

    /// All snapshots sorted by time, plus errors for the ones that could not
    /// be read (so one damaged snapshot does not hide the others).
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for id in self.list_ids(FileKind::Snapshot)? {
            match self.load_snapshot(&id) {
                Ok(s) => good.push((id, s)),
                // Not ours (see is_foreign): `check` names it.
                Err(_) if self.is_foreign(FileKind::Snapshot, &id) => {}
                Err(e) => bad.push(e),
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, bad))
    }

    /// Resolves `latest` or a unique hex prefix of a snapshot id.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            let (mut all, bad) = self.snapshots()?;
            return match all.pop() {
                Some(s) => Ok(s),
                None if !bad.is_empty() => Err(bad.into_iter().next().unwrap()),
                None => Err(Error::NotFound(
                    "the repository has no snapshots yet".into(),
                )),
            };
        }
        if spec.is_empty() || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{spec:?} is not a snapshot id: give `latest` or hex digits of an id"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let matches: Vec<Id> = self
            .list_ids(FileKind::Snapshot)?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec))
            .collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(Error::NotFound(format!("no snapshot matches {spec}"))),
            _ => Err(Error::Invalid(format!(
                "{spec} matches {} snapshots; give more digits",
                matches.len()
            ))),
        }
    }

    /// Reads one blob through the index, verifying its id.
    pub fn read_blob(&self, index: &Index, id: &Id) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| {
            Error::corrupt(
                format!("blob {}", id.short()),
                "not in any index (missing data)",
            )
        })?;
        let path = pack_path(&loc.pack);
        let open = || -> Result<Vec<u8>> {
            let (off, len) = (loc.frame_offset, loc.frame_sealed_len as u64);
            let sealed = match loc.kind {
                // Trees and chunk maps: read again by every later backup.
                BlobKind::Tree | BlobKind::Map => {
                    self.backend.read_range_metadata(&path, off, len)?
                }
                BlobKind::Data => self.backend.read_range(&path, off, len)?,
            };
            open_frame(&self.keys, &sealed, loc.frame_raw_len, &path)
        };
        let frame = self
            .frames
            .get((loc.pack, loc.frame_offset), loc.frame_raw_len, open);
        let read = frame.and_then(|frame| {
            let start = loc.offset as usize;
            let data = frame
                .get(start..start + loc.len as usize)
                .ok_or_else(|| Error::corrupt(&path, "blob lies outside its frame"))?
                .to_vec();
            if self.keys.blob_id(&data) != *id {
                return Err(Error::corrupt(
                    &path,
                    format!("blob {} does not match its id", id.short()),
                ));
            }
            Ok(data)
        });
        if read.is_err() {
            // Damage seen is recorded for the next backup (best effort:
            // the storage may be read-only).
            let _ = self.record_damaged(&loc.pack, "read");
        }
        read
    }

    /// Resolves a database image's chunk map into its chunk ids.
    pub fn resolve_map(&self, index: &Index, map: &ChunkMap) -> Result<Vec<Id>> {
        if map.chunks > u32::MAX as u64 {
            return Err(Error::corrupt("chunk map", "chunk count out of range"));
        }
        let mut ids = vec![None; map.chunks as usize];
        for layer in &map.layers {
            for b in &layer.blobs {
                let data = self.read_blob(index, b)?;
                chunkmap::apply_blob(&mut ids, &data, &format!("chunk map blob {}", b.short()))?;
            }
        }
        ids.into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::corrupt("chunk map", "does not cover every chunk of the image"))
    }

    /// The data blob ids of a file, stream or image node, in order.
    pub fn node_content(&self, index: &Index, node: &Node) -> Result<Vec<Id>> {
        match &node.chunk_map {
            Some(map) => self.resolve_map(index, map),
            None => Ok(node.content.clone()),
        }
    }

    /// Loads a tree blob.
    pub fn load_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let data = self.read_blob(index, id)?;
        Tree::decode(&data, &format!("tree {}", id.short()))
    }

    /// Adds a key file for `password`; returns its id. An append-only
    /// session can only add append-only keys.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams, append_only: bool) -> Result<Id> {
        if self.append_only && !append_only {
            return Err(Error::AppendOnly(
                "adding a full-access key (add it with --append-only)".into(),
            ));
        }
        let kf = KeyFile::create(&self.master, password, kdf, append_only, &self.config_bytes)?;
        let bytes = kf.encode();
        let (id, path) = KeyFile::path_for(&bytes);
        self.backend.write(&path, &bytes)?;
        Ok(id)
    }

    /// Lists key files. A damaged key file (bytes that no longer match its
    /// name, or no longer a key file) is listed with `damaged` set, so that
    /// it can be seen and removed.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for o in self.backend.list(KEYS_DIR)? {
            let Some(id) = id_from_path(&o.path) else {
                continue;
            };
            let bytes = self.backend.read(&o.path)?;
            let intact = Id::of_object(&bytes) == id;
            let info = match KeyFile::decode(&bytes, &o.path) {
                Ok(kf) => KeyInfo {
                    id,
                    current: id == self.key_id,
                    created: kf.created,
                    host: kf.host,
                    user: kf.user,
                    append_only: kf.append_only,
                    damaged: !intact,
                },
                Err(_) => KeyInfo {
                    id,
                    current: false,
                    created: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                    host: String::new(),
                    user: String::new(),
                    append_only: false,
                    damaged: true,
                },
            };
            out.push(info);
        }
        out.sort_by_key(|k| k.created);
        Ok(out)
    }

    /// Removes a key file by id prefix. The key in use cannot be removed,
    /// so a repository never loses its last key.
    pub fn remove_key(&self, prefix: &str) -> Result<Id> {
        self.ensure_may_delete("removing a key")?;
        let keys = self.list_keys()?;
        let m: Vec<&KeyInfo> = keys
            .iter()
            .filter(|k| k.id.to_hex().starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        let k = match m.as_slice() {
            [k] => *k,
            [] => return Err(Error::NotFound(format!("no key matches {prefix}"))),
            _ => {
                return Err(Error::Invalid(format!(
                    "{prefix} matches {} keys; give more digits",
                    m.len()
                )))
            }
        };
        if k.current {
            return Err(Error::Invalid(
                "refusing to remove the key you are using; open the repository with another key to remove this one".into(),
            ));
        }
        self.backend.delete(&format!("{KEYS_DIR}{}", k.id))?;
        Ok(k.id)
    }

    /// Changes the password of the key in use: adds a new key file, then
    /// removes the old one. Returns the new key's id.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<Id> {
        self.ensure_may_delete("changing the password (it removes the old key file)")?;
        let new_id = self.add_key(new_password, kdf, false)?;
        self.backend.delete(&format!("{KEYS_DIR}{}", self.key_id))?;
        self.key_id = new_id;
        Ok(new_id)
    }

    /// Total bytes stored in the repository.
    pub fn stored_size(&self) -> Result<u64> {
        Ok(self.backend.list("")?.iter().map(|o| o.size).sum())
    }
}
