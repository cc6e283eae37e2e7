//! The EC2 Query protocol gateway (API version 2016-11-15): SigV4
//! verification, form parsing, XML responses, mapped onto the domain layer.
