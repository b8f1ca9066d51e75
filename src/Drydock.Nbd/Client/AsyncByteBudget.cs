namespace Drydock.Nbd.Client;

/// <summary>
/// A FIFO async weighted semaphore: callers take a number of bytes from a fixed budget and give them back.
/// A request larger than the whole budget takes the whole budget, so it can never wait forever.
/// </summary>
internal sealed class AsyncByteBudget
{
    private readonly long _capacity;
    private readonly Lock _lock = new();
    private readonly LinkedList<Waiter> _waiters = new();
    private long _available;

    public AsyncByteBudget(long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _capacity = capacity;
        _available = capacity;
    }

    /// <summary>Bytes currently available.</summary>
    public long Available
    {
        get
        {
            lock (_lock)
            {
                return _available;
            }
        }
    }

    /// <summary>The amount actually charged for a request of <paramref name="bytes"/>.</summary>
    public long Charge(long bytes) => Math.Min(bytes, _capacity);

    /// <summary>Takes <paramref name="bytes"/> (capped at the capacity) from the budget, waiting in line if needed.</summary>
    public ValueTask WaitAsync(long bytes, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        var charge = Charge(bytes);
        if (charge <= 0)
        {
            return ValueTask.CompletedTask;
        }

        Waiter waiter;
        lock (_lock)
        {
            if (_waiters.Count == 0 && _available >= charge)
            {
                _available -= charge;
                return ValueTask.CompletedTask;
            }

            waiter = new Waiter(charge);
            waiter.Node = _waiters.AddLast(waiter);
        }

        return WaitSlowAsync(waiter, cancellationToken);
    }

    /// <summary>Gives back bytes taken with <see cref="WaitAsync"/> (pass the same request size).</summary>
    public void Release(long bytes)
    {
        var charge = Charge(bytes);
        if (charge <= 0)
        {
            return;
        }

        List<Waiter>? wake;
        lock (_lock)
        {
            _available += charge;
            wake = DequeueReady();
        }

        Wake(wake);
    }

    // Caller holds the lock.
    private List<Waiter>? DequeueReady()
    {
        List<Waiter>? ready = null;
        while (_waiters.First is { } first && first.Value.Bytes <= _available)
        {
            _available -= first.Value.Bytes;
            _waiters.RemoveFirst();
            first.Value.Node = null;
            (ready ??= []).Add(first.Value);
        }

        return ready;
    }

    private static void Wake(List<Waiter>? ready)
    {
        if (ready is not null)
        {
            foreach (var waiter in ready)
            {
                waiter.Completion.TrySetResult();
            }
        }
    }

    private async ValueTask WaitSlowAsync(Waiter waiter, CancellationToken cancellationToken)
    {
        await using var registration = cancellationToken.Register(() =>
        {
            bool removed;
            List<Waiter>? ready;
            lock (_lock)
            {
                removed = waiter.Node is not null;
                if (removed)
                {
                    _waiters.Remove(waiter.Node!);
                    waiter.Node = null;
                }

                // A cancelled waiter at the head may have been blocking smaller ones behind it.
                ready = DequeueReady();
            }

            if (removed)
            {
                waiter.Completion.TrySetCanceled(cancellationToken);
            }

            Wake(ready);
        });
        await waiter.Completion.Task;
    }

    private sealed class Waiter(long bytes)
    {
        public long Bytes { get; } = bytes;

        public TaskCompletionSource Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public LinkedListNode<Waiter>? Node { get; set; }
    }
}
