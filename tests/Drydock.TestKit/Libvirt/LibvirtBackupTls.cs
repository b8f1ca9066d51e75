using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.RegularExpressions;

namespace Drydock.TestKit.Libvirt;

/// <summary>
/// The x509 certificates libvirt's QEMU driver serves TLS pull-mode backups with (<c>&lt;server tls='yes'&gt;</c>), and
/// the client side of them. libvirt reads <c>backup_tls_x509_cert_dir</c> from <c>/etc/libvirt/qemu.conf</c> once, when
/// libvirtd starts (and refuses to start when that directory does not exist); QEMU reads the files in it each time a
/// TLS backup job begins. So:
/// <list type="bullet">
/// <item>the directory is fixed (<see cref="CertificatesDirectory"/>) and never deleted: a libvirtd started later by
/// anyone reads the setting and needs the directory;</item>
/// <item>every run makes a new <see cref="TestPki"/> and replaces ca-cert.pem, server-cert.pem and server-key.pem there
/// (each file by rename), readable by QEMU's group (qemu.conf <c>group</c>, default <c>libvirt-qemu</c>);</item>
/// <item>the setting is written into qemu.conf only when it is missing or names another directory
/// (<see cref="ConfigurationChanged"/>: then a running libvirtd must be restarted to see it).</item>
/// </list>
/// <c>backup_tls_x509_verify</c> is left at its default (1): QEMU requires a client certificate from the same CA.
/// </summary>
public sealed partial class LibvirtBackupTls : IDisposable
{
    /// <summary>libvirt's QEMU driver configuration (Debian package libvirt-daemon-system).</summary>
    public const string QemuConfPath = "/etc/libvirt/qemu.conf";

    /// <summary>The qemu.conf setting naming the backup server's certificates directory.</summary>
    public const string SettingName = "backup_tls_x509_cert_dir";

    /// <summary>Where the server certificates live (ca-cert.pem, server-cert.pem, server-key.pem); kept across runs.</summary>
    public const string CertificatesDirectory = "/var/lib/drydock-test/pki/backup";

    private const string DefaultQemuGroup = "libvirt-qemu";

    private readonly TestPki _pki;

    private LibvirtBackupTls(TestPki pki, bool configurationChanged)
    {
        _pki = pki;
        ConfigurationChanged = configurationChanged;
    }

    /// <summary>ca-cert.pem, client-cert.pem and client-key.pem of this run (for the driver's <c>TlsClientCertificatesDirectory</c>).</summary>
    public string ClientCertificatesDirectory => _pki.ClientDirectory;

    /// <summary>This run's CA certificate (public part).</summary>
    public X509Certificate2 CaCertificate => _pki.CaCertificate;

    /// <summary>Whether qemu.conf had to be changed, so a libvirtd that was already running does not have the setting.</summary>
    public bool ConfigurationChanged { get; }

    /// <summary>Makes this run's certificates, installs the server's in <see cref="CertificatesDirectory"/> and ensures the qemu.conf setting.</summary>
    /// <exception cref="ToolNotFoundException">libvirt's QEMU driver is not installed (no qemu.conf).</exception>
    public static async Task<LibvirtBackupTls> InstallAsync(CancellationToken cancellationToken = default)
    {
        if (!File.Exists(QemuConfPath))
        {
            throw new ToolNotFoundException(QemuConfPath, "libvirt-daemon-system");
        }

        var pki = new TestPki();
        try
        {
            var conf = await File.ReadAllTextAsync(QemuConfPath, Encoding.UTF8, cancellationToken);
            var group = QemuGroup(conf);
            await ProcessRunner.RunAsync("install", ["-d", "-m", "0755", Path.GetDirectoryName(CertificatesDirectory)!], cancellationToken);
            await ProcessRunner.RunAsync("install", ["-d", "-o", "root", "-g", group, "-m", "0750", CertificatesDirectory], cancellationToken);
            await InstallFileAsync(Path.Combine(pki.ServerDirectory, "ca-cert.pem"), group, "0644", cancellationToken);
            await InstallFileAsync(Path.Combine(pki.ServerDirectory, "server-cert.pem"), group, "0644", cancellationToken);
            await InstallFileAsync(Path.Combine(pki.ServerDirectory, "server-key.pem"), group, "0640", cancellationToken);

            var changed = WithSetting(conf, SettingName, CertificatesDirectory);
            if (changed is not null)
            {
                await ReplaceFileAsync(QemuConfPath, changed, cancellationToken);
                TestKitLog.Write($"{QemuConfPath}: set {SettingName} = \"{CertificatesDirectory}\"");
            }

            return new LibvirtBackupTls(pki, changed is not null);
        }
        catch
        {
            pki.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The qemu.conf text with <paramref name="key"/> set to <paramref name="value"/>, or null when it already is. The first
    /// active line of the key is replaced in place and later ones removed; without one, a commented line is appended.
    /// Commented-out lines (the packaged examples) are left alone.
    /// </summary>
    public static string? WithSetting(string conf, string key, string value)
    {
        ArgumentNullException.ThrowIfNull(conf);
        var wanted = $"{key} = \"{value}\"";
        var lines = conf.Split('\n').ToList();
        var active = lines.Select((line, index) => (line, index)).Where(l => IsSetting(l.line, key)).Select(l => l.index).ToList();
        if (active.Count == 1 && SettingValue(lines[active[0]]) == value)
        {
            return null;
        }

        if (active.Count == 0)
        {
            var text = conf.Length == 0 || conf.EndsWith('\n') ? conf : conf + "\n";
            return text + $"\n# Drydock tests (tests/Drydock.TestKit/Libvirt/LibvirtBackupTls.cs): TLS certificates of pull-mode backups.\n{wanted}\n";
        }

        lines[active[0]] = wanted;
        foreach (var index in active.Skip(1).Reverse())
        {
            lines.RemoveAt(index);
        }

        return string.Join('\n', lines);
    }

    /// <summary>Deletes this run's client certificates and CA (the installed server files stay for libvirtd).</summary>
    public void Dispose() => _pki.Dispose();

    private static bool IsSetting(string line, string key)
    {
        var match = SettingLine().Match(line);
        return match.Success && match.Groups["key"].Value == key;
    }

    private static string? SettingValue(string line)
    {
        var match = SettingLine().Match(line);
        return match.Success && match.Groups["quoted"].Success ? match.Groups["quoted"].Value : null;
    }

    private static string QemuGroup(string conf)
    {
        var line = conf.Split('\n').LastOrDefault(l => IsSetting(l, "group"));
        return line is null ? DefaultQemuGroup : SettingValue(line) ?? DefaultQemuGroup;
    }

    private static async Task InstallFileAsync(string source, string group, string mode, CancellationToken cancellationToken)
    {
        // Written next to the target, then renamed over it: a backup job that begins meanwhile reads a whole file.
        var target = Path.Combine(CertificatesDirectory, Path.GetFileName(source));
        var temporary = target + ".drydock-tmp";
        await ProcessRunner.RunAsync("install", ["-o", "root", "-g", group, "-m", mode, source, temporary], cancellationToken);
        File.Move(temporary, target, overwrite: true);
    }

    private static async Task ReplaceFileAsync(string path, string contents, CancellationToken cancellationToken)
    {
        var mode = File.GetUnixFileMode(path);
        var temporary = path + ".drydock-tmp";
        await File.WriteAllTextAsync(temporary, contents, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false), cancellationToken);
        File.SetUnixFileMode(temporary, mode);
        File.Move(temporary, path, overwrite: true);
    }

    [GeneratedRegex("""^\s*(?<key>[A-Za-z0-9_]+)\s*=\s*(?:"(?<quoted>[^"]*)"|(?<bare>\S+))""", RegexOptions.CultureInvariant)]
    private static partial Regex SettingLine();
}
