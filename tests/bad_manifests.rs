//! Filled in by the bad-manifest corpus.
