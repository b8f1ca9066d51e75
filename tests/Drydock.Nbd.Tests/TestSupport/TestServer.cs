using Drydock.Nbd.Client;
using Drydock.Nbd.Server;

namespace Drydock.Nbd.Tests.TestSupport;

/// <summary>How a test reaches the in-tree server.</summary>
public enum TestTransport
{
    /// <summary>A real Unix domain socket in a private temporary directory.</summary>
    Unix = 0,

    /// <summary>TCP on 127.0.0.1, a free port.</summary>
    Tcp = 1,

    /// <summary>An in-memory stream pair, no socket at all.</summary>
    InProcess = 2,
}

/// <summary>
/// An <see cref="NbdServer"/> listening on a Unix socket in its own temporary directory and on TCP loopback,
/// with a memory export "disk" (and whatever the test adds). Parallel-safe: nothing is shared between instances.
/// </summary>
public sealed class TestServer : IAsyncDisposable
{
    public const ulong DefaultSize = 16 * 1024 * 1024;

    private readonly string _directory;

    private TestServer(NbdServer server, string directory)
    {
        Server = server;
        _directory = directory;
    }

    public NbdServer Server { get; }

    public NbdFaultPlan Faults => Server.Options.Faults!;

    public NbdExport Disk => Server.FindExport("disk")!;

    /// <summary>
    /// Waits until the server counts <paramref name="expected"/> open connections: polled (with a hang guard), not timed,
    /// since the server notices each end on its own thread, possibly after the client has seen the socket close.
    /// </summary>
    public async Task WaitForActiveConnectionsAsync(int expected)
    {
        for (var polls = 0; Server.ActiveConnections != expected; polls++)
        {
            if (polls >= 1000)
            {
                throw new TimeoutException($"{Server.ActiveConnections} connection(s) open, expected {expected}");
            }

            await Task.Delay(10, TestCancellation.Ct);
        }
    }

    public static TestServer Start(Action<NbdServerOptions>? configure = null, ulong size = DefaultSize, bool listen = true)
    {
        var options = new NbdServerOptions { Faults = new NbdFaultPlan() };
        configure?.Invoke(options);
        var server = new NbdServer(options);
        server.AddExport(new NbdExport("disk", new NbdMemoryBackend(size), description: "a test disk"));
        var directory = Directory.CreateTempSubdirectory("drydock-nbd-").FullName;
        if (listen)
        {
            server.ListenUnix(Path.Combine(directory, "nbd.sock"));
            server.ListenTcp();
        }

        return new TestServer(server, directory);
    }

    /// <summary>Client settings for tests: short timeouts act as hang guards.</summary>
    public static NbdClientOptions Options(params string[] contexts)
    {
        var options = new NbdClientOptions
        {
            ConnectTimeout = TimeSpan.FromSeconds(5),
            RequestTimeout = TimeSpan.FromSeconds(5),
        };
        foreach (var context in contexts)
        {
            options.MetaContexts.Add(context);
        }

        return options;
    }

    public string TempPath(string name) => Path.Combine(_directory, name);

    public Task<NbdClient> ConnectAsync(TestTransport transport = TestTransport.Unix, string export = "disk", NbdClientOptions? options = null)
    {
        options ??= Options();
        return transport switch
        {
            TestTransport.Unix => NbdClient.ConnectAsync(Server.GetUnixUri(export), options),
            TestTransport.Tcp => NbdClient.ConnectAsync(Server.GetTcpUri(export), options),
            _ => NbdClient.ConnectAsync(Server.ConnectInProcessAsync, export, options),
        };
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        foreach (var export in Server.Exports)
        {
            await export.Backend.DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }
}
