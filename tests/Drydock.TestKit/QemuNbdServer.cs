using System.Globalization;

namespace Drydock.TestKit;

/// <summary>How <see cref="QemuNbdServer"/> serves an image.</summary>
public sealed record QemuNbdOptions
{
    /// <summary>The image to serve.</summary>
    public required string ImagePath { get; init; }

    /// <summary>Its format (<c>-f</c>). Default qcow2.</summary>
    public string Format { get; init; } = ImageFormat.Qcow2;

    /// <summary>Export name (<c>-x</c>). Default "disk".</summary>
    public string ExportName { get; init; } = "disk";

    /// <summary>Export read-only (<c>-r</c>). Default false.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>Persistent dirty bitmaps to expose as <c>qemu:dirty-bitmap:NAME</c> (<c>-B</c>, repeatable).</summary>
    public IReadOnlyList<string> Bitmaps { get; init; } = [];

    /// <summary>Expose <c>qemu:allocation-depth</c> (<c>-A</c>). Default false.</summary>
    public bool AllocationDepth { get; init; }

    /// <summary>Unix socket (default) or TCP on 127.0.0.1.</summary>
    public ServerTransport Transport { get; init; } = ServerTransport.Unix;

    /// <summary>
    /// Keep serving after the last client disconnects (<c>-t</c>). Default true; without it qemu-nbd 7.2
    /// exits after its first client, and readiness is then checked by pid file only.
    /// </summary>
    public bool Persistent { get; init; } = true;

    /// <summary>
    /// Clients served at once (<c>-e</c>); above 1 qemu-nbd advertises CAN_MULTI_CONN. Default 16; null
    /// leaves qemu-nbd's default (1, no multi-conn).
    /// </summary>
    public int? SharedClients { get; init; } = 16;

    /// <summary>
    /// Open the image with <c>force-share=on</c> through <c>--image-opts</c> (qemu-nbd 7.2 has no <c>-U</c>):
    /// serve an image another process holds. Requires <see cref="ReadOnly"/>.
    /// </summary>
    public bool ForceShare { get; init; }

    /// <summary>Export description (<c>-D</c>).</summary>
    public string? Description { get; init; }

    /// <summary>
    /// TLS: a creds directory with ca-cert.pem, server-cert.pem, server-key.pem (see <see cref="TestPki"/>);
    /// passed as <c>--object tls-creds-x509,id=tls0,dir=DIR,endpoint=server --tls-creds tls0</c>. qemu-nbd then
    /// refuses plaintext clients. Null (default): no TLS.
    /// </summary>
    public string? TlsCredentialsDirectory { get; init; }

    /// <summary>With TLS, require and verify a client certificate (<c>verify-peer=on</c>). Default true (qemu's default).</summary>
    public bool TlsVerifyPeer { get; init; } = true;

    /// <summary><c>--cache</c> mode; default: qemu-nbd's (writeback).</summary>
    public string? Cache { get; init; }

    /// <summary>More arguments, placed before the image.</summary>
    public IReadOnlyList<string> ExtraArguments { get; init; } = [];

    /// <summary>How long qemu-nbd gets to become ready. Default 30 s.</summary>
    public TimeSpan StartTimeout { get; init; } = Readiness.DefaultTimeout;
}

/// <summary>
/// qemu-nbd serving one image on a Unix socket or on 127.0.0.1, as a child process in its own private
/// directory (socket and pid file), stopped by process group on dispose.
/// </summary>
public sealed class QemuNbdServer : IAsyncDisposable
{
    private const int MaxPortAttempts = 5;

    private readonly TestDirectory _directory;

    private QemuNbdServer(QemuNbdOptions options, TestDirectory directory, ManagedProcess process, string? socketPath, int? port)
    {
        Options = options;
        _directory = directory;
        Process = process;
        SocketPath = socketPath;
        Port = port;
        Uri = socketPath is not null
            ? NbdUriText.ForUnix(socketPath, options.ExportName)
            : NbdUriText.ForTcp("127.0.0.1", port!.Value, options.ExportName);
    }

    /// <summary>The options it was started with.</summary>
    public QemuNbdOptions Options { get; }

    /// <summary>The qemu-nbd process.</summary>
    public ManagedProcess Process { get; }

    /// <summary>The Unix socket, for <see cref="ServerTransport.Unix"/>.</summary>
    public string? SocketPath { get; }

    /// <summary>The TCP port on 127.0.0.1, for <see cref="ServerTransport.Tcp"/>.</summary>
    public int? Port { get; }

    /// <summary>The export name.</summary>
    public string ExportName => Options.ExportName;

    /// <summary>
    /// The plain NBD URI (<c>nbd+unix:///EXPORT?socket=…</c> or <c>nbd://127.0.0.1:PORT/EXPORT</c>). With TLS
    /// use <see cref="TlsUri"/>: the server refuses plaintext.
    /// </summary>
    public string Uri { get; }

    /// <summary>The private directory holding the socket and pid file.</summary>
    public string DirectoryPath => _directory.Path;

    /// <summary>
    /// The <c>nbds</c>/<c>nbds+unix</c> URI for this export with <c>tls-certificates=</c> naming the client's
    /// certificates directory (see <see cref="TestPki.ClientDirectory"/>).
    /// </summary>
    public string TlsUri(string clientCertificatesDirectory) => SocketPath is not null
        ? NbdUriText.ForUnix(SocketPath, ExportName, clientCertificatesDirectory)
        : NbdUriText.ForTcp("127.0.0.1", Port!.Value, ExportName, clientCertificatesDirectory);

    /// <summary>Starts qemu-nbd and waits until it serves.</summary>
    /// <exception cref="ToolNotFoundException">qemu-nbd is not installed (Debian package qemu-utils).</exception>
    /// <exception cref="ServiceStartException">It exited or did not become ready in time; the message has its output.</exception>
    public static async Task<QemuNbdServer> StartAsync(QemuNbdOptions options, CancellationToken cancellationToken = default)
    {
        if (options.ForceShare && !options.ReadOnly)
        {
            throw new ArgumentException("force-share needs a read-only export.", nameof(options));
        }

        Tool.Find("qemu-nbd");
        var directory = TestDirectory.Create("qemu-nbd");
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                var socketPath = options.Transport == ServerTransport.Unix ? directory.SocketPath("nbd.sock") : null;
                int? port = options.Transport == ServerTransport.Tcp ? Readiness.FreeTcpPort() : null;
                var pidFile = directory.File("qemu-nbd.pid");
                File.Delete(pidFile);
                var process = ManagedProcess.Start("qemu-nbd", BuildArguments(options, socketPath, port, pidFile));
                try
                {
                    await Readiness.WaitForPidFileAsync(process, pidFile, options.StartTimeout, cancellationToken);
                    // A probe connection would count as the one client of a non-persistent server.
                    if (options.Persistent)
                    {
                        await Readiness.WaitForListenerAsync(process, socketPath, port, options.StartTimeout, cancellationToken);
                    }

                    return new QemuNbdServer(options, directory, process, socketPath, port);
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

    /// <summary>Stops qemu-nbd (process group, SIGTERM then SIGKILL) and deletes its directory.</summary>
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

    private static List<string> BuildArguments(QemuNbdOptions options, string? socketPath, int? port, string pidFile)
    {
        var arguments = new List<string>();
        if (socketPath is not null)
        {
            arguments.AddRange(["-k", socketPath]);
        }
        else
        {
            arguments.AddRange(["-b", "127.0.0.1", "-p", port!.Value.ToString(CultureInfo.InvariantCulture)]);
        }

        arguments.Add("--pid-file=" + pidFile);
        arguments.AddRange(["-x", options.ExportName]);
        if (options.ReadOnly)
        {
            arguments.Add("-r");
        }

        if (options.Persistent)
        {
            arguments.Add("-t");
        }

        if (options.SharedClients is { } shared)
        {
            arguments.AddRange(["-e", shared.ToString(CultureInfo.InvariantCulture)]);
        }

        foreach (var bitmap in options.Bitmaps)
        {
            arguments.AddRange(["-B", bitmap]);
        }

        if (options.AllocationDepth)
        {
            arguments.Add("-A");
        }

        if (options.Description is not null)
        {
            arguments.AddRange(["-D", options.Description]);
        }

        if (options.Cache is not null)
        {
            arguments.Add("--cache=" + options.Cache);
        }

        if (options.TlsCredentialsDirectory is not null)
        {
            arguments.AddRange([
                "--object",
                $"tls-creds-x509,id=tls0,dir={EscapeOption(options.TlsCredentialsDirectory)},endpoint=server,verify-peer={(options.TlsVerifyPeer ? "on" : "off")}",
                "--tls-creds=tls0",
            ]);
        }

        arguments.AddRange(options.ExtraArguments);
        if (options.ForceShare)
        {
            arguments.AddRange([
                "--image-opts",
                $"driver={options.Format},file.driver=file,file.filename={EscapeOption(options.ImagePath)},force-share=on",
            ]);
        }
        else
        {
            arguments.AddRange(["-f", options.Format, options.ImagePath]);
        }

        return arguments;
    }

    // QEMU option strings separate with ',': a literal comma is written twice.
    internal static string EscapeOption(string value) => value.Replace(",", ",,", StringComparison.Ordinal);
}
