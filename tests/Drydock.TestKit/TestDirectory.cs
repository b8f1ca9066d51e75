using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Drydock.TestKit;

/// <summary>
/// A private temporary directory (mode 0700) for one test or fixture, deleted with everything in it on
/// dispose — unless the environment variable <c>DRYDOCK_KEEP_TEMP=1</c> asks to keep it for a post-mortem.
/// Names are short so that Unix socket paths inside stay under the 107-byte limit.
/// </summary>
public sealed class TestDirectory : IDisposable
{
    /// <summary>The environment variable that keeps temporary directories when set to 1.</summary>
    public const string KeepVariable = "DRYDOCK_KEEP_TEMP";

    /// <summary>Longest Unix-domain socket path Linux accepts (sun_path is 108 bytes with its NUL).</summary>
    public const int MaxSocketPathBytes = 107;

    private readonly bool _keep;
    private int _disposed;

    private TestDirectory(string path, bool keep)
    {
        Path = path;
        _keep = keep;
    }

    /// <summary>The directory's absolute path.</summary>
    public string Path { get; }

    /// <summary>Creates a new directory under the system temporary directory.</summary>
    /// <param name="prefix">A word that says what it is for (appears in the name).</param>
    /// <param name="keep">Keep it after dispose; default: whether <c>DRYDOCK_KEEP_TEMP=1</c>.</param>
    /// <returns>The directory.</returns>
    public static TestDirectory Create(string prefix = "test", bool? keep = null)
    {
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("The test kit runs Linux services (qemu, nbdkit).");
        }

        var root = System.IO.Path.GetTempPath();
        var name = string.Create(CultureInfo.InvariantCulture, $"drydock-{prefix}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}");
        var path = System.IO.Path.Combine(root, name);
        Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return new TestDirectory(path, keep ?? Environment.GetEnvironmentVariable(KeepVariable) == "1");
    }

    /// <summary>A path inside the directory (nothing is created).</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>A path for a Unix-domain socket inside the directory, checked against the length limit.</summary>
    /// <exception cref="InvalidOperationException">The path would be too long for a Unix socket.</exception>
    public string SocketPath(string name)
    {
        var path = File(name);
        if (Encoding.UTF8.GetByteCount(path) > MaxSocketPathBytes)
        {
            throw new InvalidOperationException(
                $"Unix socket path '{path}' is longer than {MaxSocketPathBytes} bytes: point TMPDIR at a shorter directory.");
        }

        return path;
    }

    /// <summary>A new subdirectory.</summary>
    public string CreateSubdirectory(string name)
    {
        var path = File(name);
        Directory.CreateDirectory(path);
        return path;
    }

    /// <summary>Deletes the directory and its contents (unless kept).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (_keep)
        {
            TestKitLog.Write($"kept {Path} ({KeepVariable}=1)");
            return;
        }

        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
            // Already gone.
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Path;
}
