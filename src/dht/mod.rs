pub mod id;
pub mod krpc;
