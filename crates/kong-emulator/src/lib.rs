//! Kong emulator (placeholder, being written).
