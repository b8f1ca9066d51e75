using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Xunit;

namespace Drydock.TestKit.Azurite;

/// <summary>
/// Starts Azurite's blob service (<c>azurite-blob</c>) as a local process on 127.0.0.1 with a free port, in a temp
/// directory, and kills it by PID on dispose. Share it through <see cref="AzuriteCollection"/>.
/// </summary>
/// <remarks>
/// The binary is <c>$DRYDOCK_AZURITE</c> if set, else <c>$HOME/.cache/drydock/azurite/node_modules/.bin/azurite-blob</c>
/// (test.sh installs it there with npm). A missing binary fails the tests that need it with that path in the message.
/// </remarks>
public sealed class AzuriteFixture : IAsyncLifetime
{
    /// <summary>The account the emulator serves.</summary>
    public const string AccountName = "devstoreaccount1";

    /// <summary>The emulator's published well-known key.</summary>
    public const string AccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    private readonly StringBuilder _output = new();
    private Process? _process;
    private string? _directory;
    private int _containerCounter;

    /// <summary>The blob port.</summary>
    public int Port { get; private set; }

    /// <summary>The blob endpoint, path-style: <c>http://127.0.0.1:PORT/devstoreaccount1</c>.</summary>
    public Uri BlobEndpoint => new(string.Create(CultureInfo.InvariantCulture, $"http://127.0.0.1:{Port}/{AccountName}"));

    /// <summary>A Shared Key connection string for this instance, as Azure tools write them.</summary>
    public string ConnectionString
        => $"DefaultEndpointsProtocol=http;AccountName={AccountName};AccountKey={AccountKey};BlobEndpoint={BlobEndpoint};";

    /// <summary>The process id of the emulator.</summary>
    public int ProcessId => _process?.Id ?? 0;

    /// <summary>Finds the azurite-blob executable.</summary>
    /// <returns>The path.</returns>
    public static string FindBinary()
    {
        var overridePath = Environment.GetEnvironmentVariable("DRYDOCK_AZURITE");
        if (!string.IsNullOrEmpty(overridePath))
        {
            return overridePath;
        }

        var prefix = Environment.GetEnvironmentVariable("DRYDOCK_AZURITE_PREFIX");
        if (string.IsNullOrEmpty(prefix))
        {
            prefix = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "drydock", "azurite");
        }

        return Path.Combine(prefix, "node_modules", ".bin", "azurite-blob");
    }

    /// <summary>A container name unique within this fixture (tests get their own).</summary>
    /// <param name="stem">A readable stem (lowercase letters and digits).</param>
    /// <returns>The name.</returns>
    public string NewContainerName(string stem)
    {
        var name = string.Create(CultureInfo.InvariantCulture, $"{stem}-{Interlocked.Increment(ref _containerCounter)}-{Guid.NewGuid():N}");
        return name.Length > 40 ? name[..40] : name;
    }

    /// <inheritdoc />
    public async ValueTask InitializeAsync()
    {
        var binary = FindBinary();
        if (!File.Exists(binary))
        {
            throw new InvalidOperationException($"Azurite not found at '{binary}'. Run ./test.sh (it installs it with npm) or set DRYDOCK_AZURITE.");
        }

        _directory = Directory.CreateTempSubdirectory("drydock-azurite-").FullName;
        Exception? last = null;
        for (var attempt = 0; attempt < 3; attempt++)
        {
            Port = FreePort();
            try
            {
                await StartAsync(binary);
                return;
            }
            catch (InvalidOperationException e)
            {
                // Someone took the port between probing and binding: try another.
                last = e;
                Kill();
            }
        }

        throw new InvalidOperationException("Azurite did not start", last);
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        Kill();
        if (_directory is not null)
        {
            try
            {
                Directory.Delete(_directory, recursive: true);
            }
            catch (IOException)
            {
                // Leftover temp files are harmless.
            }
        }

        return ValueTask.CompletedTask;
    }

    private async Task StartAsync(string binary)
    {
        var start = new ProcessStartInfo(binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = _directory,
        };
        foreach (var arg in new[]
                 {
                     "--blobHost", "127.0.0.1", "--blobPort", Port.ToString(CultureInfo.InvariantCulture),
                     "--location", _directory!, "--disableTelemetry", "--skipApiVersionCheck", "--loose", "--silent",
                 })
        {
            start.ArgumentList.Add(arg);
        }

        _output.Clear();
        _process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {binary}");
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        // Ready when the port accepts connections; give up after 30 s or if the process exits.
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"Azurite exited with {_process.ExitCode}: {Output()}");
            }

            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException)
            {
                await Task.Delay(50);
            }
        }

        throw new InvalidOperationException($"Azurite did not listen on port {Port} within 30 s: {Output()}");
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }

    private string Output()
    {
        lock (_output)
        {
            return _output.ToString();
        }
    }

    private void Kill()
    {
        if (_process is null)
        {
            return;
        }

        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
        finally
        {
            _process.Dispose();
            _process = null;
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
