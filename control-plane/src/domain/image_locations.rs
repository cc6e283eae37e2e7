//! Who may register an image from which location.
//!
//! RegisterImage's `ImageLocation` names an image on the agents' disks
//! (deploy/images). The operator may register any location. A tenant may
//! register a location only when the operator has published it — some public
//! image (the operator's) has that location — or allowed it to every tenant
//! in `[images] tenant_locations` (names, `*`/`?` wildcards). Otherwise a
//! tenant could wrap an operator's private image (a licensed or internal
//! one) in an AMI of its own and launch it.

use crate::domain::{filters, Caller, Domain};
use crate::error::{Error, Result};

impl Domain {
    /// Refuses (`UnauthorizedOperation`) a location `caller` may not register.
    pub(crate) async fn authorize_image_location(
        &self,
        caller: &Caller,
        location: &str,
    ) -> Result<()> {
        if caller.is_operator() {
            return Ok(());
        }
        if self
            .cfg
            .images
            .tenant_locations
            .iter()
            .any(|p| filters::glob(p, location))
        {
            return Ok(());
        }
        let mut pages = self.store.images().all();
        while let Some(page) = pages.next().await? {
            if page
                .iter()
                .any(|(_, i)| i.value.public && i.value.image_location == location)
            {
                return Ok(());
            }
        }
        Err(Error::Unauthorized(format!(
            "you are not authorized to register an image from location '{location}': \
             the operator has not published it"
        )))
    }
}
