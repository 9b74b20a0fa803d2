//! Every committed fuzz corpus, through its target's checks: what a fuzzer
//! found once is checked in every run.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (target, check) in exhost_fuzz_checks::TARGETS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).expect("a corpus file");
            if let Err(panic) = std::panic::catch_unwind(|| check(&bytes)) {
                std::panic::resume_unwind(Box::new(format!("{target}: {} failed: {panic:?}", path.display())));
            }
            count += 1;
        }
        assert!(count > 0, "the corpus of {target} is empty");
        total += count;
        eprintln!("{target}: {count} inputs");
    }
    eprintln!("{total} corpus inputs checked");
}
