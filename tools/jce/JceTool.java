// Java's JCE as the reference for sstable-tde's ciphers. Run with a JDK 11 or later:
//
//   java tools/jce/JceTool.java vectors SEED   > vectors.json   new vectors, in test/fixtures format
//   java tools/jce/JceTool.java decrypt        < requests         decrypt what sstable-tde wrote
//
// A decrypt request is one line: TRANSFORMATION STRENGTH KEY_HEX CHUNK_HEX [AAD_HEX], where the
// chunk is laid out as sstable-tde writes it: [IV][ciphertext] (GCM: [nonce][ciphertext][tag]).
// Each answer is one line: the plaintext in hex, or "ERROR" and the exception.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.security.spec.AlgorithmParameterSpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.IvParameterSpec;
import javax.crypto.spec.SecretKeySpec;

public class JceTool {
  private static final HexFormat HEX = HexFormat.of();

  /** IV bytes stored before each chunk, as sstable-tde (and DSE) lay chunks out. */
  static int ivLength(String transformation) {
    String[] p = transformation.split("/");
    String mode = p.length == 3 ? p[1].toUpperCase() : "ECB";
    if (mode.equals("ECB")) return 0;
    if (mode.equals("GCM")) return 12;
    if (mode.equals("CTR")) return 16;
    return p[0].equalsIgnoreCase("AES") ? 16 : 8;
  }

  static AlgorithmParameterSpec params(String transformation, byte[] iv) {
    if (iv.length == 0) return null;
    if (transformation.toUpperCase().contains("/GCM/")) return new GCMParameterSpec(128, iv);
    return new IvParameterSpec(iv);
  }

  static byte[] run(int mode, String transformation, byte[] key, byte[] iv, byte[] input, byte[] aad)
      throws Exception {
    Cipher cipher = Cipher.getInstance(transformation);
    SecretKeySpec spec = new SecretKeySpec(key, transformation.split("/")[0]);
    AlgorithmParameterSpec p = params(transformation, iv);
    if (p == null) cipher.init(mode, spec);
    else cipher.init(mode, spec, p);
    if (aad != null) cipher.updateAAD(aad);
    return cipher.doFinal(input);
  }

  static void decrypt() throws Exception {
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
    StringBuilder out = new StringBuilder();
    for (String line; (line = in.readLine()) != null; ) {
      if (line.isBlank()) continue;
      String[] f = line.trim().split(" ");
      try {
        byte[] chunk = HEX.parseHex(f[3]);
        int ivLen = ivLength(f[0]);
        byte[] iv = Arrays.copyOfRange(chunk, 0, ivLen);
        byte[] body = Arrays.copyOfRange(chunk, ivLen, chunk.length);
        byte[] aad = f.length > 4 ? HEX.parseHex(f[4]) : null;
        out.append(HEX.formatHex(run(Cipher.DECRYPT_MODE, f[0], HEX.parseHex(f[2]), iv, body, aad)));
      } catch (Exception e) {
        out.append("ERROR ").append(e);
      }
      out.append('\n');
    }
    System.out.print(out);
  }

  /** Key bytes as JCE's key generators lay them out for a strength. */
  static byte[] key(String alg, int bits, Random rnd) {
    byte[] k;
    if (alg.equals("DES")) k = new byte[8];
    else if (alg.equals("DESede")) k = new byte[24];
    else k = new byte[bits / 8];
    rnd.nextBytes(k);
    if (alg.equals("DESede") && bits == 112) System.arraycopy(k, 0, k, 16, 8);
    return k;
  }

  static void vectors(long seed) throws Exception {
    Random rnd = new Random(seed);
    Object[][] ciphers = {
      {"AES", new int[] {128, 192, 256}}, {"DES", new int[] {56}}, {"DESede", new int[] {112, 168}},
      {"Blowfish", new int[] {32, 128, 448}}, {"RC2", new int[] {40, 128}},
    };
    int[] lengths = {0, 1, 15, 16, 17, 64, 1000, 4096};
    List<String> entries = new ArrayList<>();
    for (Object[] c : ciphers) {
      String alg = (String) c[0];
      int block = alg.equals("AES") ? 16 : 8;
      for (int bits : (int[]) c[1]) {
        for (String mode : new String[] {"ECB", "CBC"}) {
          for (String pad : new String[] {"PKCS5Padding", "NoPadding"}) {
            String t = alg + "/" + mode + "/" + pad;
            for (int len : lengths) {
              if (pad.equals("NoPadding") && (len == 0 || len % block != 0)) continue;
              byte[] k = key(alg, bits, rnd);
              byte[] iv = new byte[mode.equals("ECB") ? 0 : block];
              rnd.nextBytes(iv);
              byte[] plain = new byte[len];
              rnd.nextBytes(plain);
              byte[] ct = run(Cipher.ENCRYPT_MODE, t, k, iv, plain, null);
              entries.add(String.format(
                  "{\"transformation\":\"%s\",\"secret_key_strength\":%d,\"key\":\"%s\",\"iv\":%s,"
                      + "\"plaintext\":\"%s\",\"ciphertext\":\"%s\"}",
                  t, bits, HEX.formatHex(k), iv.length == 0 ? "null" : "\"" + HEX.formatHex(iv) + "\"",
                  HEX.formatHex(plain), HEX.formatHex(ct)));
            }
          }
        }
      }
    }
    System.out.println("[\n" + String.join(",\n", entries) + "\n]");
  }

  public static void main(String[] args) throws Exception {
    if (args.length >= 1 && args[0].equals("decrypt")) decrypt();
    else if (args.length >= 2 && args[0].equals("vectors")) vectors(Long.parseLong(args[1]));
    else {
      System.err.println("usage: java JceTool.java vectors SEED | decrypt < requests");
      System.exit(2);
    }
  }
}
