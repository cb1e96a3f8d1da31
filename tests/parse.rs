mod common;

use std::fs;

use common::*;

#[test]
fn parse_writes_one_row_per_image_matching_the_idx_bytes() {
    let out = tempfile::tempdir().unwrap();
    let output = succeeds(
        mnist()
            .args(["parse", "--input"])
            .arg(sample_dir())
            .arg("--output")
            .arg(out.path()),
    );
    assert!(stderr(&output).contains("4000 rows"));
    let train = fs::read_to_string(out.path().join("train.csv")).unwrap();
    let test = fs::read_to_string(out.path().join("test.csv")).unwrap();
    assert_eq!(train.lines().count(), 4000);
    assert_eq!(test.lines().count(), 1000);

    let images = gunzip(&sample_dir().join("train-images-idx3-ubyte.gz"));
    let labels = gunzip(&sample_dir().join("train-labels-idx1-ubyte.gz"));
    for (i, line) in train.lines().enumerate().step_by(397) {
        let fields: Vec<u8> = line.split(',').map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields.len(), 785);
        assert_eq!(fields[0], labels[8 + i], "label of row {i}");
        assert_eq!(
            &fields[1..],
            &images[16 + i * 784..16 + (i + 1) * 784],
            "pixels of row {i}"
        );
    }
}

#[test]
fn parse_finds_raw_files_in_nested_directories_by_their_bytes() {
    let input = tempfile::tempdir().unwrap();
    let nested = input.path().join("a/b");
    fs::create_dir_all(&nested).unwrap();
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        // Raw bytes under the plain name.
        let raw = gunzip(&sample_dir().join(format!("{name}.gz")));
        fs::write(nested.join(name), raw).unwrap();
    }
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        // Gzipped bytes under a name without `.gz`: told by the bytes, not the name.
        fs::copy(
            sample_dir().join(name),
            input.path().join(name.trim_end_matches(".gz")),
        )
        .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    succeeds(
        mnist()
            .args(["parse", "--input"])
            .arg(input.path())
            .arg("--output")
            .arg(out.path()),
    );
    assert_eq!(
        fs::read_to_string(out.path().join("test.csv"))
            .unwrap()
            .lines()
            .count(),
        1000
    );
}
