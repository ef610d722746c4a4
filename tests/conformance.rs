//! The shared conformance suite, run against every provider that needs no server.

use leader_election::testing::Harness;
use leader_election::{FileProvider, MemoryProvider};

/// All clients share one in-process store.
#[derive(Default)]
struct MemoryHarness(MemoryProvider);

impl Harness for MemoryHarness {
    type Provider = MemoryProvider;
    fn client(&self) -> MemoryProvider {
        self.0.clone()
    }
}

/// Every client is its own `FileProvider` (its own open files, so its own locks) on one
/// directory, as separate processes would be.
struct FileHarness(tempfile::TempDir);

impl FileHarness {
    fn new() -> Self {
        FileHarness(tempfile::tempdir().expect("temp dir"))
    }
}

impl Harness for FileHarness {
    type Provider = FileProvider;
    fn client(&self) -> FileProvider {
        FileProvider::new(self.0.path()).expect("file provider")
    }
}

leader_election::conformance_tests!(memory, MemoryHarness::default());
leader_election::conformance_tests!(file, FileHarness::new());
