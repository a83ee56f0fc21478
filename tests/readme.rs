//! The front page stays a front page, and stays true: README.md is at most 200 lines, its
//! fresh-machine commands are the ones CI runs and name an example that exists with the
//! port it says, its links lead somewhere, and it carries no history (commit hashes, issue
//! numbers). The guide's chapters are all included by src/guide.rs and linked from it.

use std::fs;
use std::path::Path;

const MAX_LINES: usize = 200;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn readme() -> String {
    read("README.md")
}

/// The lines of the first fenced block after `heading`.
fn block_after(text: &str, heading: &str) -> Vec<String> {
    let rest = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"))..];
    let mut lines = rest.lines().skip_while(|l| !l.starts_with("```")).skip(1);
    lines
        .by_ref()
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

/// A shell line without its comment.
fn command(line: &str) -> &str {
    line.split('#').next().unwrap().trim()
}

#[test]
fn readme_is_at_most_200_lines() {
    let n = readme().lines().count();
    assert!(
        n <= MAX_LINES,
        "README.md has {n} lines, more than {MAX_LINES}: move the detail to the guide \
         (docs/), BENCHMARKS.md, CHANGELOG.md or an example's README"
    );
}

#[test]
fn ci_runs_the_test_command_the_readme_gives() {
    let block = block_after(&readme(), "## On a fresh machine");
    let test = block
        .iter()
        .map(|l| command(l))
        .find(|c| c.starts_with("cargo test"))
        .expect("README's fresh-machine block gives a test command");
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test),
        ".ci/run does not run README's test command `{test}` as a line of its own"
    );
}

#[test]
fn the_readme_server_command_names_an_example_with_its_port() {
    let block = block_after(&readme(), "## On a fresh machine");
    let line = block
        .iter()
        .find(|l| l.contains("--example"))
        .expect("README's fresh-machine block starts an example");
    let name = command(line)
        .split_whitespace()
        .skip_while(|w| *w != "--example")
        .nth(1)
        .expect("an example name after --example");
    assert_eq!(
        command(line),
        format!("cargo run --release --example {name}"),
        "the server command takes no flags: the example's defaults must be enough"
    );
    let source = read(&format!("examples/{name}.rs"));
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter(|p| !p.is_empty())
        .expect("the comment says the address, 127.0.0.1:PORT");
    assert!(
        source.contains(&format!(", {port},")) || source.contains(&format!("Service::new({port})")),
        "examples/{name}.rs does not default to port {port}, as README.md says"
    );
}

#[test]
fn readme_local_links_lead_to_files() {
    let text = readme();
    let mut checked = 0;
    for target in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(target);
        assert!(
            path.exists(),
            "README.md links to {target}, which does not exist"
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "only {checked} local links found: the parser lost them"
    );
}

#[test]
fn every_guide_chapter_is_included_and_linked() {
    let guide = read("src/guide.rs");
    let text = readme();
    let mut chapters = 0;
    for entry in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if !file.ends_with(".md") {
            continue;
        }
        chapters += 1;
        let include = format!("#[doc = include_str!(\"../docs/{file}\")]");
        let module = file.trim_end_matches(".md").replace('-', "_");
        assert!(
            guide.contains(&include),
            "src/guide.rs does not include docs/{file}"
        );
        assert!(
            guide.contains(&format!("{include}\npub mod {module} {{}}")),
            "docs/{file} is not the module guide::{module}"
        );
        assert!(
            text.contains(&format!("/socketserver/guide/{module}/index.html")),
            "README.md does not link the guide chapter {module}"
        );
    }
    assert!(chapters >= 6, "{chapters} chapters under docs/");
}

#[test]
fn readme_carries_no_history() {
    let text = readme();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        let hex = word.len() >= 7 && word.chars().all(|c| c.is_ascii_hexdigit());
        let has_digit_and_letter = word.chars().any(|c| c.is_ascii_digit())
            && word.chars().any(|c| c.is_ascii_alphabetic());
        assert!(
            !(hex && has_digit_and_letter),
            "README.md names what looks like a commit: {word}"
        );
    }
    let lower = text.to_lowercase();
    for (i, _) in lower.match_indices("issue") {
        let after = lower[i + "issue".len()..].trim_start_matches([' ', '#']);
        assert!(
            !after.starts_with(|c: char| c.is_ascii_digit()),
            "README.md names an issue number: {}",
            &text[i..(i + 12).min(text.len())]
        );
    }
}

#[test]
fn readme_states_the_rust_version_of_cargo_toml() {
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("Cargo.toml states rust-version");
    assert!(
        readme().contains(&format!("`rust-version` {msrv}")),
        "README.md does not state rust-version {msrv}"
    );
}
