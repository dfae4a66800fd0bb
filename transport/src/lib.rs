//! placeholder: the mesh transport (see the issue).
