namespace Drydock.Storage.Azure;

/// <summary>Options of <see cref="AzureBlobStore"/>.</summary>
public sealed class AzureBlobStoreOptions
{
    /// <summary>The blob container. Required (3..63 lowercase letters, digits and dashes).</summary>
    public string Container { get; set; } = "";

    /// <summary>A name prefix inside the container under which every object lives (no leading or trailing slash).
    /// Default empty: the whole container.</summary>
    public string Prefix { get; set; } = "";

    /// <summary>Objects up to this size go in one Put Blob; larger ones as Put Block + Put Block List.
    /// Default 32 MiB.</summary>
    public int SingleUploadLimit { get; set; } = 32 * 1024 * 1024;

    /// <summary>The block size of large uploads. Default 8 MiB (the service allows up to 4000 MiB).</summary>
    public int BlockSize { get; set; } = 8 * 1024 * 1024;

    /// <summary>Retries after the first attempt on throttling (429/503), 5xx, resets and timeouts. Default 6.</summary>
    public int MaxRetries { get; set; } = 6;

    /// <summary>The first backoff delay; later ones grow exponentially with jitter. Default 200 ms.</summary>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The longest single backoff delay, also the cap on a server's Retry-After. Default 30 s.</summary>
    public TimeSpan RetryMaxDelay { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The deadline of one attempt (request and body). Default 100 s.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(100);
}
