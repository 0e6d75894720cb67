//! SecretProviderClass and SecretProviderClassPodStatus: their types and how keymount finds them.

pub mod crd;
pub mod crd_schema;
pub mod directory;
pub mod lookup;

pub use crd::{
    SecretObject, SecretObjectData, SecretProviderClass, SecretProviderClassPodStatus,
    SecretProviderClassSpec,
};
pub use directory::DirectoryClasses;
pub use lookup::{ApiClasses, ClassSource, LookupError};
