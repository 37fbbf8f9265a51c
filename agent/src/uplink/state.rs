//! The sans-IO core of one relay session.
