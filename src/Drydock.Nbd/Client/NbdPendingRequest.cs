using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Client;

/// <summary>
/// One request in flight: what was asked, where READ data goes, what has arrived, and its completion.
/// The reader loop owns the destination buffer until the request completes or is cancelled; a cancelled
/// request's remaining data is read and discarded, never written into the caller's buffer.
/// </summary>
internal sealed class NbdPendingRequest
{
    private const int Waiting = 0;
    private const int ReaderWriting = 1;
    private const int Cancelled = 2;
    private const int Completed = 3;

    private readonly TaskCompletionSource<IReadOnlyDictionary<string, List<NbdExtent>>?> _completion;

    private int _state;
    private volatile bool _cancelRequested;
    private CancellationToken _cancellationToken;

    public NbdPendingRequest(NbdCommand command, NbdCommandFlags flags, ulong offset, uint length, Memory<byte> destination, long charge, bool inlineCompletion)
    {
        // Inline: the caller's continuation runs on the reader thread that completes the request.
        _completion = new(inlineCompletion ? TaskCreationOptions.None : TaskCreationOptions.RunContinuationsAsynchronously);
        Command = command;
        Flags = flags;
        Offset = offset;
        Length = length;
        Destination = destination;
        Charge = charge;
    }

    public NbdCommand Command { get; }

    public NbdCommandFlags Flags { get; }

    public ulong Offset { get; }

    public uint Length { get; }

    /// <summary>Bytes charged against the connection's in-flight budget.</summary>
    public long Charge { get; }

    public ulong Cookie { get; set; }

    public long StartedAt { get; set; }

    public Memory<byte> Destination { get; }

    /// <summary>For READ with structured replies: which bytes arrived.</summary>
    public NbdReadCoverage? Coverage { get; set; }

    /// <summary>For BLOCK_STATUS: the rules of the reply.</summary>
    public NbdBlockStatusValidator? BlockStatus { get; set; }

    /// <summary>For BLOCK_STATUS: extents by context name.</summary>
    public Dictionary<string, List<NbdExtent>>? Extents { get; set; }

    /// <summary>The error the server reported (the lowest offset wins when several name one).</summary>
    public NbdErrorChunk? Error { get; private set; }

    public Task<IReadOnlyDictionary<string, List<NbdExtent>>?> Task => _completion.Task;

    public void RecordError(NbdErrorChunk error)
    {
        if (Error is not { } existing
            || (error.Offset is { } at && (existing.Offset is not { } previous || at < previous)))
        {
            Error = error;
        }
    }

    /// <summary>Arms caller cancellation; returns the registration to dispose when done.</summary>
    public CancellationTokenRegistration RegisterCancellation(CancellationToken cancellationToken)
    {
        if (!cancellationToken.CanBeCanceled)
        {
            return default;
        }

        _cancellationToken = cancellationToken;
        return cancellationToken.UnsafeRegister(static state => ((NbdPendingRequest)state!).RequestCancel(), this);
    }

    /// <summary>The reader asks to write into the destination; false means discard (cancelled).</summary>
    public bool BeginWrite() => Interlocked.CompareExchange(ref _state, ReaderWriting, Waiting) == Waiting;

    /// <summary>The reader finished writing into the destination.</summary>
    public void EndWrite()
    {
        Volatile.Write(ref _state, Waiting);
        if (_cancelRequested)
        {
            RequestCancel();
        }
    }

    public void Complete(IReadOnlyDictionary<string, List<NbdExtent>>? extents)
    {
        if (Interlocked.CompareExchange(ref _state, Completed, Waiting) == Waiting)
        {
            _completion.TrySetResult(extents);
        }
    }

    public void Fail(Exception error)
    {
        var previous = Interlocked.Exchange(ref _state, Completed);
        if (previous != Completed && previous != Cancelled)
        {
            _completion.TrySetException(error);
        }
    }

    private void RequestCancel()
    {
        _cancelRequested = true;
        if (Interlocked.CompareExchange(ref _state, Cancelled, Waiting) == Waiting)
        {
            _completion.TrySetCanceled(_cancellationToken);
        }
    }
}
