//! The catalogue ([`myelin_node::codes`]) is the only production source file that spells an
//! Axon error code: every other file names codes through `ErrorCode`, so a code can never be
//! mistyped, and changing one means changing one line. Test code may spell codes (it checks
//! what clients see on the wire).

use myelin_testkit::tidy::production_sources;

/// The text every Axon error code starts with.
const CODE_PREFIX: &str = concat!("AXONIQ", "-");
const CATALOGUE: &str = "crates/node/src/codes.rs";

#[test]
fn only_the_catalogue_spells_an_axon_error_code() {
    let sources = production_sources(&["fuzz/src", "fuzz/fuzz_targets"]);
    assert!(sources.len() > 50, "the walk found too few files: {}", sources.len());
    let mut offenders = Vec::new();
    for source in sources.iter().filter(|source| source.path != CATALOGUE) {
        for (number, line) in source.text.lines().enumerate() {
            if line.contains(CODE_PREFIX) {
                offenders.push(format!("{}:{}: {}", source.path, number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "Axon error codes spelled outside {CATALOGUE} (use myelin_node::ErrorCode):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_catalogue_does_spell_the_codes() {
    let sources = production_sources(&[]);
    let catalogue = sources.iter().find(|source| source.path == CATALOGUE);
    assert!(catalogue.is_some_and(|source| source.text.contains(&format!("{CODE_PREFIX}6000"))));
}
