//! SecretProviderClass and SecretProviderClassPodStatus: their types and how keymount finds them.

pub mod crd;
pub(crate) mod crd_schema;
pub(crate) mod directory;
pub(crate) mod lookup;

pub use crd::{SecretProviderClass, SecretProviderClassPodStatus, SecretProviderClassSpec};
pub use directory::DirectoryClasses;
pub use lookup::ClassSource;
pub(crate) use lookup::{ApiClasses, LookupError};
