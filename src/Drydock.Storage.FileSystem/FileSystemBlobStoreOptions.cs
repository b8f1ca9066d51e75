namespace Drydock.Storage.FileSystem;

/// <summary>Options of <see cref="FileSystemBlobStore"/>.</summary>
public sealed class FileSystemBlobStoreOptions
{
    /// <summary>The directory holding the objects. Required; created if missing.</summary>
    public string Root { get; set; } = "";

    /// <summary>Whether file data and directories are fsynced before a put returns. Default <see langword="true"/>;
    /// turn off only for throwaway test stores.</summary>
    public bool Durable { get; set; } = true;

    /// <summary>When <see langword="true"/> (the default), a put fsyncs the object's data before publishing it (so no
    /// torn object is ever visible) but leaves the directory fsync to <see cref="IBlobStore.FlushAsync"/>, which
    /// fsyncs every directory changed since the last flush: one journal commit per batch instead of one per object.
    /// A crash before the flush can lose whole recent objects, never expose partial ones. When <see langword="false"/>,
    /// every put also fsyncs its directory before returning.</summary>
    public bool DeferDirectorySync { get; set; } = true;

    /// <summary>Objects up to this size get a content-hash ETag (exact compare-and-swap even within one clock tick);
    /// larger ones a time-and-size ETag. Default 4 KiB: leases are a few hundred bytes, and listing chunks must not
    /// read them.</summary>
    public int ContentETagLimit { get; set; } = 4 * 1024;

    /// <summary>Objects of at least this many bytes are written with <c>O_DIRECT</c> (from an aligned copy, padded and then
    /// truncated to their length), bypassing the page cache: for chunks this costs a fraction of the CPU of a buffered
    /// write plus fsync, and keeps backup data out of the host's cache. Where the filesystem refuses <c>O_DIRECT</c> the
    /// store falls back to buffered writes by itself. Default 256 KiB; 0 turns direct writes off.</summary>
    public int DirectWriteThreshold { get; set; } = 256 * 1024;
}
