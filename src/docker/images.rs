//! Images: presence checks and `docker load` of a release's image archive.

use std::io::Read;

use anyhow::{Context, Result};
use bollard::query_parameters::ImportImageOptionsBuilder;
use futures_util::StreamExt;

use super::{is_not_found, stream::body_from_reader, Engine};

impl Engine {
    /// True when `reference` (e.g. `acme/app:1.2`) exists in the engine.
    pub fn image_exists(&self, reference: &str) -> Result<bool> {
        match self.block_on(self.api.inspect_image(reference)) {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("inspecting image {reference}")),
        }
    }

    /// The image's content id (`sha256:…`), for manifests.
    pub fn image_id(&self, reference: &str) -> Result<Option<String>> {
        match self.block_on(self.api.inspect_image(reference)) {
            Ok(img) => Ok(img.id),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting image {reference}")),
        }
    }

    /// Streams an image archive (`docker save` format, plain or gzip) into
    /// the engine; returns the lines the engine reported (`Loaded image: …`).
    pub fn load_images<R: Read + Send + 'static>(&self, archive: R) -> Result<Vec<String>> {
        let body = body_from_reader(archive);
        let opts = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut stream = self.api.import_image_stream(opts, body, None);
        let mut loaded = Vec::new();
        self.block_on(async {
            while let Some(item) = stream.next().await {
                let info = item.context("the engine refused the image archive")?;
                if let Some(line) = info.stream {
                    let line = line.trim().to_string();
                    if !line.is_empty() {
                        loaded.push(line);
                    }
                }
            }
            anyhow::Ok(())
        })?;
        Ok(loaded)
    }
}
