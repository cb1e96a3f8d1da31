//! Names that become parts of paths and URLs (run ids, projects, entities, artifact and sweep
//! names), checked before use as the SDK checks them, so that none reaches outside the
//! directory it names a part of: `WANDB_RUN_ID=../../x` must not write outside `WANDB_DIR`.

/// What W&B names may not contain: the SDK's `/ \ # ? % :`, and what would split a path, a
/// list or a quoted string.
const FORBIDDEN: &[char] = &['/', '\\', '#', '?', '%', ':', ';', ',', '\''];
/// The SDK's limit for run ids and project names.
const MAX_LEN: usize = 128;

/// A name W&B (and this tool's paths) cannot take.
#[derive(Debug, thiserror::Error)]
#[error("{what} {value:?} is not a valid W&B name: {problem}")]
pub struct BadName {
    what: String,
    value: String,
    problem: String,
}

/// Checks `value`, called `what` in the error (`WANDB_RUN_ID`, `wandb.project`, …).
pub fn check(what: &str, value: &str) -> Result<(), BadName> {
    let problem = if value.is_empty() {
        Some("it is empty".to_owned())
    } else if value.chars().count() > MAX_LEN {
        Some(format!("it is longer than {MAX_LEN} characters"))
    } else if let Some(c) = value
        .chars()
        .find(|c| FORBIDDEN.contains(c) || c.is_control())
    {
        Some(format!(
            "it contains {c:?} (W&B names may not contain / \\ # ? % : ; , ' or control characters)"
        ))
    } else if value.contains("..") {
        Some("it contains \"..\"".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(BadName {
            what: what.to_owned(),
            value: value.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_their_directory_are_refused() {
        for bad in [
            "../../x", "a/b", "a\\b", "..", "run..1", "a:b", "a;b", "a,b", "#1", "a?", "it's", "",
            "a\nb",
        ] {
            let err = check("WANDB_RUN_ID", bad).expect_err(bad).to_string();
            assert!(err.starts_with("WANDB_RUN_ID "), "{err}");
        }
        assert!(check("a project", &"x".repeat(129)).is_err());
        for good in [
            "abc123",
            "mnist",
            "trial-001_lr=0.001",
            "team.name",
            "x".repeat(128).as_str(),
        ] {
            check("a name", good).expect(good);
        }
    }
}
