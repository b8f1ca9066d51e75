namespace Drydock.Transfer;

/// <summary>What a disk transfer (backup or restore) has done so far; reported often, never blocking the transfer.</summary>
public sealed record TransferProgress
{
    /// <summary>The disk (target name).</summary>
    public required string Disk { get; init; }

    /// <summary>What is being done.</summary>
    public required TransferPhase Phase { get; init; }

    /// <summary>Bytes this transfer will move in total (data to read for a backup, data to write for a restore).</summary>
    public required long TotalBytes { get; init; }

    /// <summary>Bytes moved so far.</summary>
    public required long DoneBytes { get; init; }

    /// <summary>Extents (chunk runs) planned.</summary>
    public long TotalExtents { get; init; }

    /// <summary>Extents done.</summary>
    public long DoneExtents { get; init; }

    /// <summary>Time since the transfer started.</summary>
    public TimeSpan Elapsed { get; init; }

    /// <summary>Bytes per second over the transfer so far (0 until measurable).</summary>
    public double BytesPerSecond => Elapsed > TimeSpan.Zero ? DoneBytes / Elapsed.TotalSeconds : 0;

    /// <summary>Estimated time left at the current rate, or null while unknown.</summary>
    public TimeSpan? Eta => BytesPerSecond > 0 ? TimeSpan.FromSeconds(Math.Max(0, TotalBytes - DoneBytes) / BytesPerSecond) : null;
}

/// <summary>The phase of a transfer.</summary>
public enum TransferPhase
{
    /// <summary>Reading block status and building the read plan.</summary>
    Planning = 0,

    /// <summary>Moving data.</summary>
    Transferring = 1,

    /// <summary>Flushing and committing.</summary>
    Finishing = 2,

    /// <summary>Done.</summary>
    Done = 3,
}
