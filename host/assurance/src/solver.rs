//! The symbolic compiler and its solver: one cvc5 process, driven from a
//! single-threaded runtime of its own so that callers stay synchronous.

use cedar_policy::{PolicySet, RequestEnv, Schema};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicySet, Env};

/// Why a proof could not be carried out (as opposed to: it failed).
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    /// cvc5 could not be started.
    #[error(
        "cannot start the cvc5 solver ({path}): {message}; install it with `cargo xtask setup` (Debian's `cvc5` package) or point CVC5 at the executable"
    )]
    Start {
        /// The program tried.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The runtime that drives the solver could not be built.
    #[error("cannot start the solver's runtime: {0}")]
    Runtime(String),
    /// Compiling a policy set for one request type failed.
    #[error("cannot compile {what} for {env}: {message}")]
    Compile {
        /// Which set.
        what: String,
        /// The request type.
        env: String,
        /// SymCC's message.
        message: String,
    },
    /// The solver failed or gave up on a query.
    #[error("the solver failed on {env}: {message}")]
    Query {
        /// The request type.
        env: String,
        /// What it said.
        message: String,
    },
}

/// Arguments for cvc5. Debian's cvc5 (1.0) needs `--strings-exp` for the
/// string operations `like` compiles to; the time limit keeps one query
/// from holding CI for ever.
const CVC5_ARGS: [&str; 2] = ["--tlimit=60000", "--strings-exp"];

/// Cedar's symbolic compiler over one cvc5 process.
pub struct Prover {
    runtime: tokio::runtime::Runtime,
    compiler: CedarSymCompiler<LocalSolver>,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prover").finish_non_exhaustive()
    }
}

impl Prover {
    /// Starts cvc5: `$CVC5`, else `cvc5` on the `PATH`.
    pub fn start() -> Result<Prover, SolverError> {
        let path = std::env::var("CVC5").unwrap_or_else(|_| "cvc5".into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SolverError::Runtime(e.to_string()))?;
        // The solver process is spawned on the runtime (tokio's process
        // support needs one to be current).
        let solver = runtime
            .block_on(async { LocalSolver::cvc5_with_args(CVC5_ARGS) })
            .map_err(|e| SolverError::Start {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let compiler = CedarSymCompiler::new(solver).map_err(|e| SolverError::Start {
            path,
            message: e.to_string(),
        })?;
        Ok(Prover { runtime, compiler })
    }

    /// Compiles `set` for one request type.
    pub fn compile(
        &self,
        set: &PolicySet,
        env: &RequestEnv,
        schema: &Schema,
        what: &str,
    ) -> Result<CompiledPolicySet, SolverError> {
        CompiledPolicySet::compile(set, env, schema).map_err(|e| SolverError::Compile {
            what: what.to_string(),
            env: crate::describe_env(env),
            message: e.to_string(),
        })
    }

    /// A request `a` allows and `b` does not, if there is one.
    pub fn allowed_by_a_not_b(
        &mut self,
        a: &CompiledPolicySet,
        b: &CompiledPolicySet,
        env: &RequestEnv,
    ) -> Result<Option<Env>, SolverError> {
        let query = self.compiler.check_implies_with_counterexample_opt(a, b);
        self.runtime
            .block_on(query)
            .map_err(|e| SolverError::Query {
                env: crate::describe_env(env),
                message: e.to_string(),
            })
    }

    /// A request both `a` and `b` allow, if there is one.
    pub fn allowed_by_both(
        &mut self,
        a: &CompiledPolicySet,
        b: &CompiledPolicySet,
        env: &RequestEnv,
    ) -> Result<Option<Env>, SolverError> {
        let query = self.compiler.check_disjoint_with_counterexample_opt(a, b);
        self.runtime
            .block_on(query)
            .map_err(|e| SolverError::Query {
                env: crate::describe_env(env),
                message: e.to_string(),
            })
    }
}
