use crate::error::{Error, Result};

pub fn run(_args: pico_args::Arguments) -> Result<()> {
    Err(Error::runtime("`leech` is not built yet"))
}
