//! Black-box tests of both operators, in `tests/`: the binaries run as processes under the
//! identities their charts grant (and as images, and installed by their charts), on this
//! test binary's local control plane (`test_support::shared`). Nothing here: a test
//! crate needs a target of its own.
#![forbid(unsafe_code)]
