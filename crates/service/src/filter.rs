//! Include and exclude rules of a configured source, as globs.

use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// A source's rules. A pattern without `/` matches a file or folder name
/// anywhere below the source; one with `/` matches the whole path.
pub struct Filter {
    exclude_names: GlobSet,
    exclude_paths: GlobSet,
    include_names: GlobSet,
    include_paths: GlobSet,
    has_include: bool,
}

fn build(patterns: &[String], with_slash: bool) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns.iter().filter(|p| p.contains('/') == with_slash) {
        b.add(Glob::new(p).map_err(|e| format!("pattern {p:?}: {e}"))?);
    }
    b.build().map_err(|e| e.to_string())
}

impl Filter {
    pub fn new(exclude: &[String], include: &[String]) -> Result<Filter, String> {
        Ok(Filter {
            exclude_names: build(exclude, false)?,
            exclude_paths: build(exclude, true)?,
            include_names: build(include, false)?,
            include_paths: build(include, true)?,
            has_include: !include.is_empty(),
        })
    }

    fn matches(names: &GlobSet, paths: &GlobSet, path: &Path) -> bool {
        path.file_name().is_some_and(|n| names.is_match(n)) || paths.is_match(path)
    }
}

impl ledgervault_repo::PathFilter for Filter {
    fn keep(&self, path: &Path, is_dir: bool) -> bool {
        if Self::matches(&self.exclude_names, &self.exclude_paths, path) {
            return false;
        }
        is_dir || !self.has_include || Self::matches(&self.include_names, &self.include_paths, path)
    }
}

/// The rules of every configured source, each applied below its own path.
pub struct SourceFilters(Vec<(std::path::PathBuf, Filter)>);

impl SourceFilters {
    /// `None` when no source has rules.
    pub fn from_config(
        sources: &[crate::config::SourceConfig],
    ) -> anyhow::Result<Option<std::sync::Arc<dyn ledgervault_repo::PathFilter>>> {
        let mut out = Vec::new();
        for s in sources {
            if s.exclude.is_empty() && s.include.is_empty() {
                continue;
            }
            let f = Filter::new(&s.exclude, &s.include).map_err(|e| anyhow::anyhow!(e))?;
            out.push((std::path::PathBuf::from(s.path.get_ref()), f));
        }
        Ok((!out.is_empty()).then(|| std::sync::Arc::new(SourceFilters(out)) as _))
    }
}

impl ledgervault_repo::PathFilter for SourceFilters {
    fn keep(&self, path: &Path, is_dir: bool) -> bool {
        self.0
            .iter()
            .filter(|(root, _)| path.starts_with(root))
            .all(|(_, f)| f.keep(path, is_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgervault_repo::PathFilter;

    #[test]
    fn names_and_paths() {
        let f = Filter::new(
            &["*.tmp".into(), "~$*".into(), "/srv/firm/cache/**".into()],
            &[],
        )
        .unwrap();
        assert!(!f.keep(Path::new("/srv/firm/a/b.tmp"), false));
        assert!(!f.keep(Path::new("/srv/firm/~$ledger.xlsx"), false));
        assert!(!f.keep(Path::new("/srv/firm/cache/x/y.pdf"), false));
        assert!(f.keep(Path::new("/srv/firm/ledger.xlsx"), false));
        let only = Filter::new(&[], &["*.pdf".into()]).unwrap();
        assert!(only.keep(Path::new("/srv/firm/scans"), true));
        assert!(only.keep(Path::new("/srv/firm/scans/a.pdf"), false));
        assert!(!only.keep(Path::new("/srv/firm/scans/a.txt"), false));
        assert!(Filter::new(&["a[".into()], &[]).is_err());
    }
}
