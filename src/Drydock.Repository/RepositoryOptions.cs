using Drydock.Repository.Compression;

namespace Drydock.Repository;

/// <summary>How an opened repository behaves (not stored in it).</summary>
public sealed class RepositoryOptions
{
    /// <summary>Chunks hashed, compressed and encrypted (or checked, on read) at once: the CPU stage.
    /// Default: the number of processors.</summary>
    public int MaxParallelism { get; set; } = Environment.ProcessorCount;

    /// <summary>Storage requests in flight at once (uploads on write, fetches on read and verify), so that fsync and
    /// network latency overlap the CPU stage. At least <see cref="MaxParallelism"/>. Default 8.</summary>
    public int MaxConcurrentRequests { get; set; } = 8;

    /// <summary>Chunks queued ahead of the workers. A writer's memory is bounded by about
    /// (queue + requests + processors) × chunk size. Default: 2 × the number of processors.</summary>
    public int QueueDepth { get; set; } = 2 * Environment.ProcessorCount;

    /// <summary>The longest a backup session may run before its commit is refused. Must stay below the GC grace
    /// window, which is what keeps chunks uploaded early in a long session alive (F31). Default 12 h.</summary>
    public TimeSpan MaxSessionDuration { get; set; } = TimeSpan.FromHours(12);

    /// <summary>How long a per-domain writer lease or the maintenance lease lasts without renewal. Default 1 h.</summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How long a committing writer waits for a running GC sweep to finish. Default 10 min.</summary>
    public TimeSpan GcWaitTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How often a committing writer looks again at a running GC sweep. Default 2 s.</summary>
    public TimeSpan GcPollInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Allowance for clock differences between hosts and the storage service. Default 5 min.</summary>
    public TimeSpan ClockSkewMargin { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>The deepest parent chain followed when checking lineage. Default 100 000.</summary>
    public int MaxLineageDepth { get; set; } = 100_000;

    /// <summary>The largest manifest or other signed document read. Default 16 MiB.</summary>
    public int MaxDocumentSize { get; set; } = 16 * 1024 * 1024;
}

/// <summary>What a new repository is made with (stored in its configuration).</summary>
public sealed class RepositoryInitOptions
{
    /// <summary>The chunk size of new disks: a power of two from 64 KiB to 64 MiB. Default 2 MiB (see docs/BENCHMARKS.md).</summary>
    public int ChunkSize { get; set; } = 2 * 1024 * 1024;

    /// <summary>Whether objects are encrypted with AES-256-GCM and chunk ids keyed. Default <see langword="true"/>.</summary>
    public bool Encrypt { get; set; } = true;

    /// <summary>The compression of new objects. Default zstd (Brotli is used when libzstd is absent).</summary>
    public CompressionAlgorithm Compression { get; set; } = CompressionAlgorithm.Zstd;

    /// <summary>The compression level (zstd 1..19, Brotli 0..11). Default 1.</summary>
    public int CompressionLevel { get; set; } = 1;

    /// <summary>PBKDF2-HMAC-SHA-256 iterations of the key file. Default 600 000.</summary>
    public int KdfIterations { get; set; } = Crypto.KeyFile.DefaultIterations;
}
