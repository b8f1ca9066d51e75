namespace Drydock.Runtime.Storage;

/// <summary>
/// A broadcast wake-up without lost pulses: take <see cref="NextPulse"/> BEFORE looking at the store, look, then
/// await it. A pulse that lands in between completes the task already taken.
/// </summary>
public sealed class AsyncSignal
{
    private TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>A task that completes at the next pulse.</summary>
    public Task NextPulse => Volatile.Read(ref _next).Task;

    /// <summary>Wakes everyone waiting on the current <see cref="NextPulse"/>.</summary>
    public void Pulse()
    {
        var previous = Interlocked.Exchange(ref _next, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        previous.TrySetResult();
    }

    /// <summary>Waits for <paramref name="pulse"/> or the timeout, whichever comes first.</summary>
    /// <returns>True if pulsed, false on timeout.</returns>
    public static async Task<bool> WaitAsync(Task pulse, TimeSpan timeout, TimeProvider timeProvider, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pulse);
        if (timeout <= TimeSpan.Zero)
        {
            return pulse.IsCompleted;
        }

        try
        {
            await pulse.WaitAsync(timeout, timeProvider, cancellationToken);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }
}

/// <summary>The wake-up channels of a store.</summary>
public sealed class RuntimeSignals
{
    /// <summary>A message became due now.</summary>
    public AsyncSignal Inbox { get; } = new();

    /// <summary>An effect was queued.</summary>
    public AsyncSignal Work { get; } = new();

    /// <summary>A reply was written.</summary>
    public AsyncSignal Reply { get; } = new();

    /// <summary>Pulses one channel.</summary>
    public void Pulse(SignalKind kind)
    {
        switch (kind)
        {
            case SignalKind.Inbox:
                Inbox.Pulse();
                break;
            case SignalKind.Work:
                Work.Pulse();
                break;
            case SignalKind.Reply:
                Reply.Pulse();
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown signal.");
        }
    }

    /// <summary>Pulses every channel (after a reconnect, when notifications may have been missed).</summary>
    public void PulseAll()
    {
        Inbox.Pulse();
        Work.Pulse();
        Reply.Pulse();
    }
}
