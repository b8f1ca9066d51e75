using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;

namespace Drydock.SiloHost.Cli;

/// <summary>
/// SIGINT (Ctrl+C) and SIGTERM for the <c>drydock</c> process. The first signal cancels <see cref="Token"/> and the
/// process keeps running, so that the command releases what it holds (capture, repository lease, partial images) and
/// says so; a second signal while that cleanup runs exits at once with <see cref="ExitCodes.Cancelled"/>.
/// </summary>
/// <remarks>
/// System.CommandLine's own handling is turned off (<c>ProcessTerminationTimeout = null</c>). With it, the invocation
/// ended with 130 (143 for SIGTERM) without waiting for the command's cleanup: the process was gone with nothing on
/// standard error, leaving the capture, the repository lease and partial files behind (seen with the qemu driver and
/// restore); and <c>drydock demo</c>, which runs synchronously for long stretches, ran to its end after a SIGINT.
/// </remarks>
internal sealed class TerminationSignals : IDisposable
{
    [SuppressMessage("Reliability", "CA2213:Disposable fields should be disposed", Justification = "The writer belongs to the caller.")]
    private readonly TextWriter _error;
    private readonly CancellationTokenSource _cancel = new();
    private readonly PosixSignalRegistration _interrupt;
    private readonly PosixSignalRegistration _terminate;
    private int _signals;

    private TerminationSignals(TextWriter error)
    {
        _error = error;
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
    }

    /// <summary>Cancelled by the first SIGINT or SIGTERM.</summary>
    public CancellationToken Token => _cancel.Token;

    /// <summary>Starts handling SIGINT and SIGTERM.</summary>
    /// <param name="error">Where the note about a forced exit goes.</param>
    /// <returns>The registration; dispose it to restore the default actions.</returns>
    public static TerminationSignals Register(TextWriter error) => new(error);

    /// <inheritdoc />
    public void Dispose()
    {
        _interrupt.Dispose();
        _terminate.Dispose();
        _cancel.Dispose();
    }

    private void OnSignal(PosixSignalContext context)
    {
        // Handled here: the runtime must not terminate the process.
        context.Cancel = true;
        if (Interlocked.Increment(ref _signals) == 1)
        {
            // The token's callbacks run on the thread pool, not on the runtime's signal thread.
            _ = _cancel.CancelAsync();
            return;
        }

        _error.WriteLine($"drydock: {context.Signal} again during cleanup; exiting without finishing it (the next backup of the domain releases what is left)");
        _error.Flush();
        Environment.Exit(ExitCodes.Cancelled);
    }
}
