//! Operating the deployment rather than relaying: the certificate authority
//! (`pki`), the loopback demo and the Cremona inventory it runs on, and the
//! offline checks of recordings and evidence (`recall`).

pub mod demo;
pub mod inventory;
pub mod pki;
pub mod recall;
