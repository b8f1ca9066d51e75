using System.Diagnostics.Metrics;

namespace Drydock.Repository;

/// <summary>Metrics of the repository library (meter <c>Drydock.Repository</c>).</summary>
internal static class RepositoryInstruments
{
    public static readonly Meter Meter = new("Drydock.Repository");

    /// <summary>Chunks uploaded as new objects.</summary>
    public static readonly Counter<long> ChunksUploaded = Meter.CreateCounter<long>("drydock.repository.chunks.uploaded", "{chunk}");

    /// <summary>Bytes uploaded (sealed chunk objects).</summary>
    public static readonly Counter<long> BytesUploaded = Meter.CreateCounter<long>("drydock.repository.bytes.uploaded", "By");

    /// <summary>Submitted chunks that already existed.</summary>
    public static readonly Counter<long> ChunksDeduplicated = Meter.CreateCounter<long>("drydock.repository.chunks.deduplicated", "{chunk}");

    /// <summary>Chunks read and verified.</summary>
    public static readonly Counter<long> ChunksRead = Meter.CreateCounter<long>("drydock.repository.chunks.read", "{chunk}");

    /// <summary>Chunks that failed a check (missing, corrupt, tampered).</summary>
    public static readonly Counter<long> ChunksBad = Meter.CreateCounter<long>("drydock.repository.chunks.bad", "{chunk}");
}
