using System.Globalization;

namespace Drydock.TestKit;

/// <summary>nbdkit's <c>--tls</c> modes.</summary>
public enum NbdkitTls
{
    /// <summary>No TLS (<c>--tls=off</c>): a client asking for it is refused.</summary>
    Off = 0,

    /// <summary>TLS offered, plaintext allowed (<c>--tls=on</c>).</summary>
    On = 1,

    /// <summary>TLS required (<c>--tls=require</c>).</summary>
    Require = 2,
}

/// <summary>
/// What <see cref="NbdkitServer"/> runs: a plugin with its parameters and a stack of filters. Build one with a
/// plugin factory (<see cref="Memory"/>, <see cref="SparseRandom"/>, …) and add filters with the <c>With…</c>
/// methods; every method returns a new instance.
/// </summary>
public sealed record NbdkitOptions
{
    /// <summary>The plugin name (or path).</summary>
    public required string Plugin { get; init; }

    /// <summary><c>KEY=VALUE</c> parameters for the plugin and the filters, in order.</summary>
    public IReadOnlyList<string> Parameters { get; init; } = [];

    /// <summary>Filters, outermost first (<c>--filter=NAME</c>).</summary>
    public IReadOnlyList<string> Filters { get; init; } = [];

    /// <summary>Unix socket (default) or TCP on 127.0.0.1.</summary>
    public ServerTransport Transport { get; init; } = ServerTransport.Unix;

    /// <summary>Export name (<c>-e</c>) for the URI. Default empty (nbdkit serves any name).</summary>
    public string ExportName { get; init; } = string.Empty;

    /// <summary>Read-only (<c>-r</c>). Default false.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>Worker threads (<c>-t</c>); default: nbdkit's.</summary>
    public int? Threads { get; init; }

    /// <summary>TLS mode. Default <see cref="NbdkitTls.Off"/>.</summary>
    public NbdkitTls Tls { get; init; }

    /// <summary>Server creds directory for TLS (ca-cert.pem, server-cert.pem, server-key.pem; see <see cref="TestPki"/>).</summary>
    public string? TlsCertificatesDirectory { get; init; }

    /// <summary>With TLS, require and verify client certificates (<c>--tls-verify-peer</c>). Default false.</summary>
    public bool TlsVerifyPeer { get; init; }

    /// <summary>Debug output (<c>-v</c>) into the captured standard error.</summary>
    public bool Verbose { get; init; }

    /// <summary>More nbdkit options, placed before the filters.</summary>
    public IReadOnlyList<string> ExtraArguments { get; init; } = [];

    /// <summary>How long nbdkit gets to become ready. Default 30 s.</summary>
    public TimeSpan StartTimeout { get; init; } = Readiness.DefaultTimeout;

    /// <summary>The memory plugin: a writable RAM disk of <paramref name="size"/> bytes, all zeros.</summary>
    public static NbdkitOptions Memory(long size) => new() { Plugin = "memory", Parameters = ["size=" + Invariant(size)] };

    /// <summary>
    /// The sparse-random plugin: <paramref name="size"/> bytes where about <paramref name="percent"/>% is
    /// data in runs and the rest reads as zero holes (reported by extents). Writable; deterministic per seed.
    /// </summary>
    /// <param name="size">Disk size in bytes.</param>
    /// <param name="percent">Approximate share of data, 0 to 100.</param>
    /// <param name="seed">Random seed.</param>
    /// <param name="runLength">Average data run in bytes; null: nbdkit's default, 16 MiB, which leaves a small
    /// disk with few or no runs (use e.g. 256 KiB for disks of tens of MiB).</param>
    /// <param name="randomContent">Every byte random (<c>random-content=true</c>) rather than one repeated byte per block.</param>
    public static NbdkitOptions SparseRandom(long size, double percent = 10, long seed = 1, long? runLength = null, bool randomContent = false)
    {
        var parameters = new List<string> { "size=" + Invariant(size), "percent=" + percent.ToString(CultureInfo.InvariantCulture), "seed=" + Invariant(seed) };
        if (runLength is { } run)
        {
            parameters.Add("runlength=" + Invariant(run));
        }

        if (randomContent)
        {
            parameters.Add("random-content=true");
        }

        return new() { Plugin = "sparse-random", Parameters = parameters };
    }

    /// <summary>
    /// The pattern plugin: read-only, <paramref name="size"/> bytes where each 8-byte big-endian word holds its
    /// own offset.
    /// </summary>
    public static NbdkitOptions Pattern(long size) => new() { Plugin = "pattern", Parameters = ["size=" + Invariant(size)] };

    /// <summary>The data plugin with nbdkit's data format (e.g. <c>"1 2 3 @0x1000 4"</c>), optionally padded to <paramref name="size"/>.</summary>
    public static NbdkitOptions Data(string data, long? size = null) => new()
    {
        Plugin = "data",
        Parameters = size is { } s ? ["data=" + data, "size=" + Invariant(s)] : ["data=" + data],
    };

    /// <summary>The file plugin serving <paramref name="path"/> (a raw image).</summary>
    public static NbdkitOptions File(string path) => new() { Plugin = "file", Parameters = ["file=" + path] };

    /// <summary>The nbd plugin: a proxy in front of another NBD server's Unix socket and export.</summary>
    public static NbdkitOptions Nbd(string socketPath, string exportName = "") => new()
    {
        Plugin = "nbd",
        Parameters = ["socket=" + socketPath, "export=" + exportName],
    };

    /// <summary>Adds a filter with its parameters.</summary>
    public NbdkitOptions WithFilter(string filter, params string[] parameters) =>
        this with { Filters = [.. Filters, filter], Parameters = [.. Parameters, .. parameters] };

    /// <summary>
    /// The error filter: fail a fraction of requests with <paramref name="error"/>.
    /// </summary>
    /// <param name="rate">Probability 0..1 of failing a request (1 = every one).</param>
    /// <param name="error">The errno to return: EIO, EPERM, ENOMEM, EINVAL, ENOSPC, ESHUTDOWN.</param>
    /// <param name="operation">Only this kind of request (pread, pwrite, trim, zero, extents, cache); null: all.</param>
    /// <param name="triggerFile">Inject only while this file exists (create/delete it during the test).</param>
    public NbdkitOptions WithErrorFilter(double rate = 1.0, string error = "EIO", string? operation = null, string? triggerFile = null)
    {
        var prefix = operation is null ? "error" : "error-" + operation;
        var parameters = new List<string> { prefix + "=" + error, prefix + "-rate=" + rate.ToString(CultureInfo.InvariantCulture) };
        if (triggerFile is not null)
        {
            parameters.Add(prefix + "-file=" + triggerFile);
        }

        return WithFilter("error", [.. parameters]);
    }

    /// <summary>The delay filter: added latency per request kind (whole milliseconds).</summary>
    public NbdkitOptions WithDelay(TimeSpan? read = null, TimeSpan? write = null, TimeSpan? zero = null, TimeSpan? trim = null, TimeSpan? extents = null)
    {
        var parameters = new List<string>();
        void Add(string name, TimeSpan? delay)
        {
            if (delay is { } d)
            {
                parameters.Add(name + "=" + ((long)d.TotalMilliseconds).ToString(CultureInfo.InvariantCulture) + "ms");
            }
        }

        Add("delay-read", read);
        Add("delay-write", write);
        Add("delay-zero", zero);
        Add("delay-trim", trim);
        Add("delay-extents", extents);
        return WithFilter("delay", [.. parameters]);
    }

    /// <summary>The noextents filter: the server says it cannot report extents (everything reads as data).</summary>
    public NbdkitOptions WithNoExtents() => WithFilter("noextents");

    /// <summary>
    /// The blocksize filter: splits and aligns requests so the plugin sees minimum block, maximum data per
    /// request and maximum length. It does not advertise them (nbdkit 1.32): see <see cref="WithBlocksizePolicy"/>.
    /// </summary>
    public NbdkitOptions WithBlocksize(int? minimumBlock = null, int? maximumData = null, long? maximumLength = null)
    {
        var parameters = new List<string>();
        if (minimumBlock is { } min)
        {
            parameters.Add("minblock=" + Invariant(min));
        }

        if (maximumData is { } maxData)
        {
            parameters.Add("maxdata=" + Invariant(maxData));
        }

        if (maximumLength is { } maxLength)
        {
            parameters.Add("maxlen=" + Invariant(maxLength));
        }

        return WithFilter("blocksize", [.. parameters]);
    }

    /// <summary>
    /// The blocksize-policy filter: advertises block size constraints to the client (NBD_INFO_BLOCK_SIZE) and,
    /// with <paramref name="errorPolicy"/> "error", fails requests that break them.
    /// </summary>
    public NbdkitOptions WithBlocksizePolicy(int? minimum = null, int? preferred = null, int? maximum = null, string? errorPolicy = null)
    {
        var parameters = new List<string>();
        if (minimum is { } min)
        {
            parameters.Add("blocksize-minimum=" + Invariant(min));
        }

        if (preferred is { } pref)
        {
            parameters.Add("blocksize-preferred=" + Invariant(pref));
        }

        if (maximum is { } max)
        {
            parameters.Add("blocksize-maximum=" + Invariant(max));
        }

        if (errorPolicy is not null)
        {
            parameters.Add("blocksize-error-policy=" + errorPolicy);
        }

        return WithFilter("blocksize-policy", [.. parameters]);
    }

    /// <summary>The multi-conn filter with <c>multi-conn-mode=MODE</c> (auto, emulate, disable, plugin, unsafe).</summary>
    public NbdkitOptions WithMultiConn(string mode = "emulate") => WithFilter("multi-conn", "multi-conn-mode=" + mode);

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// nbdkit in the foreground (<c>-f --exit-with-parent</c>) serving one plugin and filter stack on a Unix socket
/// or 127.0.0.1, in its own private directory (socket, pid file), stopped by process group on dispose.
/// </summary>
public sealed class NbdkitServer : IAsyncDisposable
{
    private const int MaxPortAttempts = 5;

    private readonly TestDirectory _directory;

    private NbdkitServer(NbdkitOptions options, TestDirectory directory, ManagedProcess process, string? socketPath, int? port)
    {
        Options = options;
        _directory = directory;
        Process = process;
        SocketPath = socketPath;
        Port = port;
        Uri = TlsUriOrPlain(null);
    }

    /// <summary>The options it was started with.</summary>
    public NbdkitOptions Options { get; }

    /// <summary>The nbdkit process.</summary>
    public ManagedProcess Process { get; }

    /// <summary>The Unix socket, for <see cref="ServerTransport.Unix"/>.</summary>
    public string? SocketPath { get; }

    /// <summary>The TCP port on 127.0.0.1, for <see cref="ServerTransport.Tcp"/>.</summary>
    public int? Port { get; }

    /// <summary>The plain NBD URI of the export.</summary>
    public string Uri { get; }

    /// <summary>The private directory (socket, pid file); a good place for error-filter trigger files.</summary>
    public string DirectoryPath => _directory.Path;

    /// <summary>The <c>nbds</c>/<c>nbds+unix</c> URI with <c>tls-certificates=</c> naming the client's directory.</summary>
    public string TlsUri(string clientCertificatesDirectory) => TlsUriOrPlain(clientCertificatesDirectory);

    /// <summary>Starts nbdkit and waits until it serves.</summary>
    /// <exception cref="ToolNotFoundException">nbdkit is not installed (Debian package nbdkit).</exception>
    /// <exception cref="ServiceStartException">It exited or did not become ready in time; the message has its output.</exception>
    public static async Task<NbdkitServer> StartAsync(NbdkitOptions options, CancellationToken cancellationToken = default)
    {
        Tool.Find("nbdkit");
        var directory = TestDirectory.Create("nbdkit");
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                var socketPath = options.Transport == ServerTransport.Unix ? directory.SocketPath("nbd.sock") : null;
                int? port = options.Transport == ServerTransport.Tcp ? Readiness.FreeTcpPort() : null;
                var pidFile = directory.File("nbdkit.pid");
                File.Delete(pidFile);
                var process = ManagedProcess.Start("nbdkit", BuildArguments(options, socketPath, port, pidFile));
                try
                {
                    await Readiness.WaitForPidFileAsync(process, pidFile, options.StartTimeout, cancellationToken);
                    await Readiness.WaitForListenerAsync(process, socketPath, port, options.StartTimeout, cancellationToken);

                    return new NbdkitServer(options, directory, process, socketPath, port);
                }
                catch (ServiceStartException) when (port is not null && attempt < MaxPortAttempts && Readiness.IsAddressInUse(process.StandardError))
                {
                    await process.DisposeAsync();
                }
                catch
                {
                    await process.DisposeAsync();
                    throw;
                }
            }
        }
        catch
        {
            directory.Dispose();
            throw;
        }
    }

    /// <summary>Stops nbdkit (process group) and deletes its directory.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await Process.DisposeAsync();
        }
        finally
        {
            _directory.Dispose();
        }
    }

    private string TlsUriOrPlain(string? clientCertificatesDirectory) => SocketPath is not null
        ? NbdUriText.ForUnix(SocketPath, Options.ExportName, clientCertificatesDirectory)
        : NbdUriText.ForTcp("127.0.0.1", Port!.Value, Options.ExportName, clientCertificatesDirectory);

    private static List<string> BuildArguments(NbdkitOptions options, string? socketPath, int? port, string pidFile)
    {
        var arguments = new List<string> { "--foreground", "--exit-with-parent", "-P", pidFile };
        if (socketPath is not null)
        {
            arguments.AddRange(["-U", socketPath]);
        }
        else
        {
            arguments.AddRange(["-i", "127.0.0.1", "-p", port!.Value.ToString(CultureInfo.InvariantCulture)]);
        }

        if (options.ExportName.Length > 0)
        {
            arguments.AddRange(["-e", options.ExportName]);
        }

        if (options.ReadOnly)
        {
            arguments.Add("-r");
        }

        if (options.Threads is { } threads)
        {
            arguments.AddRange(["-t", threads.ToString(CultureInfo.InvariantCulture)]);
        }

        if (options.Verbose)
        {
            arguments.Add("-v");
        }

        if (options.Tls != NbdkitTls.Off)
        {
            arguments.Add(options.Tls == NbdkitTls.Require ? "--tls=require" : "--tls=on");
            if (options.TlsCertificatesDirectory is not null)
            {
                arguments.Add("--tls-certificates=" + options.TlsCertificatesDirectory);
            }

            if (options.TlsVerifyPeer)
            {
                arguments.Add("--tls-verify-peer");
            }
        }
        else
        {
            arguments.Add("--tls=off");
        }

        arguments.AddRange(options.ExtraArguments);
        foreach (var filter in options.Filters)
        {
            arguments.Add("--filter=" + filter);
        }

        arguments.Add(options.Plugin);
        arguments.AddRange(options.Parameters);
        return arguments;
    }
}
