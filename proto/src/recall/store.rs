//! Recording store: see the module docs of `recall`.
