//! The EC2 Query protocol gateway (API version 2016-11-15): SigV4
//! verification, form parsing, XML responses, mapped onto the domain layer.

pub mod error;
pub mod query;
pub mod requests;
pub mod sigv4;
pub mod xml;
