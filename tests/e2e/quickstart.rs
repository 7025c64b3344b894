//! The README's first command: `bosun quickstart` runs the demo pipeline end to end on embedded
//! defaults and prints `success`; its output shows each feature the demo exercises.

use bosun_tests::bin_dir;

#[test]
fn the_quickstart_demo_runs_every_feature_it_shows_and_prints_success() {
    let output = std::process::Command::new(bin_dir().join("bosun"))
        .arg("quickstart")
        .output()
        .expect("bosun quickstart");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bosun quickstart failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert_eq!(stdout.lines().last(), Some("success"), "{stdout}");
    for shown in [
        "No cache is found for key: v1-tools-",
        "deploying with token ******** (",
        "Stored cache v1-tools-",
        "Persisted 1 file",
        "the build printed 6",
        "build-output/result.txt",
        "all tests passed",
        "orb bosun/demo@1.0.0 published",
        "reported the build's result from the orb bosun/demo",
        "workflow build-and-test: success",
    ] {
        assert!(
            stdout.contains(shown),
            "the demo shows {shown:?}:\n{stdout}"
        );
    }
}
