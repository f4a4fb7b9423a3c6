//! dev auth-service (placeholder, being written).
