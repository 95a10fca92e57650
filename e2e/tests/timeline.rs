//! The three strategies side by side on a real API server, both operators running as
//! processes and a third writer forcing contention: every run converges with nothing
//! lost; lazy and retry meet 409s, apply meets none; retry absorbs its 409s inside the
//! write where lazy pays a failed reconcile for each.
use test_support::shared;
use tools::timeline::{self, Options};

#[tokio::test]
async fn lazy_retry_and_apply_under_contention() {
    let logs = std::env::temp_dir().join(test_support::unique_name("timeline-logs"));
    let options = Options::new(test_support::operator_bin_dir(), logs.clone());
    let mut runs = Vec::new();
    for strategy in ["lazy", "retry", "apply"] {
        let run = timeline::run(shared(), strategy, &options).await.unwrap();
        println!("{}", tools::report::timeline_text(&run, 30));
        runs.push(run);
    }
    println!("{}", tools::report::comparison_table(&runs));
    let [lazy, retry, apply] = [&runs[0], &runs[1], &runs[2]];

    for run in &runs {
        assert!(
            run.final_ok(),
            "{}: {:?} (up {:?}, down {:?})",
            run.strategy,
            run.final_problems,
            run.converge_up,
            run.converge_down
        );
        assert!(
            run.third_writer_writes > 0,
            "{}: the third writer wrote nothing",
            run.strategy
        );
    }
    let conflicts = |r: &timeline::Run| r.total(|c| c.conflicts);
    assert!(conflicts(lazy) > 0, "lazy met no conflict");
    assert!(conflicts(retry) > 0, "retry met no conflict");
    assert_eq!(conflicts(apply), 0, "server-side apply met a conflict");
    assert_eq!(apply.requests("update"), 0, "apply sent a PUT");
    assert!(apply.requests("apply") > 0);

    // The logs and the metrics agree on the 409s.
    for run in &runs {
        assert_eq!(
            run.conflicts.len() as u64,
            conflicts(run),
            "{}: logged vs counted 409s",
            run.strategy
        );
    }
    // Lazy: each 409 fails its reconcile, which runs again in full.
    assert!(lazy.conflicts.iter().all(|c| c.next == "requeue"));
    assert_eq!(lazy.total(|c| c.failed_reconciles), conflicts(lazy));
    // Retry: a 409 is re-read and retried inside the write; reconciles do not fail.
    assert!(
        retry.total(|c| c.retries)
            >= conflicts(retry)
                - retry
                    .conflicts
                    .iter()
                    .filter(|c| c.next == "give_up")
                    .count() as u64
    );
    assert!(
        retry.total(|c| c.failed_reconciles) < lazy.total(|c| c.failed_reconciles),
        "retry failed {} reconciles, lazy {}",
        retry.total(|c| c.failed_reconciles),
        lazy.total(|c| c.failed_reconciles)
    );
    let _ = std::fs::remove_dir_all(logs);
}
