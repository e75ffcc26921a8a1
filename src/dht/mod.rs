pub mod id;
pub mod krpc;
pub mod limit;
pub mod store;
pub mod table;
pub mod token;
