namespace Drydock.Storage.FileSystem;

/// <summary>Options of <see cref="FileSystemBlobStore"/>.</summary>
public sealed class FileSystemBlobStoreOptions
{
    /// <summary>The directory holding the objects. Required; created if missing.</summary>
    public string Root { get; set; } = "";

    /// <summary>Whether file data and directories are fsynced before a put returns. Default <see langword="true"/>;
    /// turn off only for throwaway test stores.</summary>
    public bool Durable { get; set; } = true;

    /// <summary>Objects up to this size get a content-hash ETag (exact compare-and-swap even within one clock tick);
    /// larger ones a time-and-size ETag. Default 4 KiB: leases are a few hundred bytes, and listing chunks must not
    /// read them.</summary>
    public int ContentETagLimit { get; set; } = 4 * 1024;
}
