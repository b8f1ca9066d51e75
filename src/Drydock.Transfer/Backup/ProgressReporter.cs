namespace Drydock.Transfer.Backup;

/// <summary>
/// Counts a transfer's progress and reports it to a sink at most once per interval (plus on every phase change),
/// without blocking the threads that move data: the counters are atomic, a report is skipped when another thread is
/// already making one.
/// </summary>
internal sealed class ProgressReporter
{
    private readonly string _disk;
    private readonly IProgress<TransferProgress>? _sink;
    private readonly TimeProvider _time;
    private readonly long _intervalTicks;
    private readonly long _started;
    private readonly Lock _lock = new();
    private long _lastReport;
    private long _doneBytes;
    private long _doneExtents;
    private TransferPhase _phase;

    public ProgressReporter(string disk, IProgress<TransferProgress>? sink, TimeProvider time, TimeSpan interval)
    {
        _disk = disk;
        _sink = sink;
        _time = time;
        _started = time.GetTimestamp();
        _lastReport = _started;
        _intervalTicks = (long)(Math.Max(0, interval.TotalSeconds) * time.TimestampFrequency);
    }

    /// <summary>Bytes the transfer will move.</summary>
    public long TotalBytes { get; set; }

    /// <summary>Extents planned.</summary>
    public long TotalExtents { get; set; }

    /// <summary>Time since the transfer started.</summary>
    public TimeSpan Elapsed => _time.GetElapsedTime(_started);

    /// <summary>Counts moved bytes and finished extents; reports when the interval has passed.</summary>
    public void Add(long bytes, long extents = 0)
    {
        Interlocked.Add(ref _doneBytes, bytes);
        if (extents != 0)
        {
            Interlocked.Add(ref _doneExtents, extents);
        }

        if (_sink is null || _time.GetTimestamp() - Volatile.Read(ref _lastReport) < _intervalTicks)
        {
            return;
        }

        if (_lock.TryEnter())
        {
            try
            {
                var now = _time.GetTimestamp();
                if (now - _lastReport >= _intervalTicks)
                {
                    _lastReport = now;
                    _sink.Report(Snapshot(_phase));
                }
            }
            finally
            {
                _lock.Exit();
            }
        }
    }

    /// <summary>Enters a phase and reports at once.</summary>
    public void Enter(TransferPhase phase)
    {
        lock (_lock)
        {
            _phase = phase;
            _lastReport = _time.GetTimestamp();
            _sink?.Report(Snapshot(phase));
        }
    }

    private TransferProgress Snapshot(TransferPhase phase) => new()
    {
        Disk = _disk,
        Phase = phase,
        TotalBytes = TotalBytes,
        DoneBytes = Interlocked.Read(ref _doneBytes),
        TotalExtents = TotalExtents,
        DoneExtents = Interlocked.Read(ref _doneExtents),
        Elapsed = Elapsed,
    };
}
