//! Distribution endpoints: upload a file of user ids, list the tasks, read one's progress,
//! cancel, download the failure report.
//!
//! One file per route action. The upload (`upload`) runs three steps, each in its own file:
//! `receive` streams the multipart form to a temp file and checks its fields, `inspect` reads
//! the file as a sheet, `respond` creates the task and answers. `shared` holds the upload
//! configuration, self-removing temp files and the error helpers the routes share.

pub(crate) mod failures;
mod inspect;
mod receive;
mod respond;
mod shared;
mod tasks;
mod upload;
mod view;

pub use failures::{__path_failures, failures};
pub use shared::UploadConfig;
pub use tasks::{
    __path_cancel, __path_get, __path_list, DistributionPage, PageParams, cancel, get, list,
};
pub use upload::{__path_upload, UploadForm, upload};
pub use view::DistributionView;
