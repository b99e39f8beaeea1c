//! The Raft log of one replication group on disk.
