//! The `vmcp-operator` binary.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "vmcp-operator", version, about = "Kubernetes operator for vmcp")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print every CRD as YAML (or write one file per CRD with --out-dir).
    Crds {
        /// Write `<group>_<plural>.yaml` files into this folder instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir: Some(dir) } => {
            let written = vmcp_operator::crdgen::write_all(&dir)
                .with_context(|| format!("writing CRDs into {}", dir.display()))?;
            for p in written {
                eprintln!("wrote {}", p.display());
            }
        }
        Command::Crds { out_dir: None } => {
            print!("{}", vmcp_operator::crdgen::render_stream()?);
        }
    }
    Ok(())
}
