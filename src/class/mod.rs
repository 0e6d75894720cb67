//! SecretProviderClass and SecretProviderClassPodStatus: their types and how keymount finds them.

pub mod crd;
pub mod crd_schema;
pub mod lookup;

pub use crd::{
    SecretObject, SecretObjectData, SecretProviderClass, SecretProviderClassPodStatus,
    SecretProviderClassSpec,
};
pub use lookup::{ClassSource, DirectoryClasses, LookupError, WatchedClasses};
