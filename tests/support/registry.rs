//! Starts the CNCF distribution registry on 127.0.0.1 for tests.
